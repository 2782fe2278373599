/**
 * Training throughput of the BYOL + metadata step on every available tfjs backend,
 * side by side with the same model and step in PyTorch (CPU), measured interleaved in
 * one run so the machine's load affects both alike.
 *
 *   npx vite-node bench/training.ts [-- --arch tiny,resnet18,resnet50 --size 32,64,128
 *        --batch auto --steps 5 --warmup 1 --backends wasm,cpu --workers 1,2 --torch-threads 2 --norm batch]
 *
 * `--norm group` measures group-norm encoders (the product default) in every framework; the
 * default stays batch norm so that recorded figures keep their meaning. `--torch-threads 0`
 * leaves PyTorch out (an A/B of two wasm trees with `--compare`).
 *
 * `--batch auto` (the default) takes {@link autoBatch}: 32 images, fewer where the step
 * does not fit the wasm backend's 4 GiB heap; a number forces that batch everywhere. Every
 * framework of one config trains the same batch. A child that cannot run its config (the
 * wasm heap exhausted, or any other error) is reported in one line (`… does not fit …` /
 * `… failed …`) and the bench goes on with the others.
 *
 * Each measured framework/config runs in its own child process (peak RSS is per
 * process, all threads); the parent asks each child for one step in turn. `--workers`
 * lists the data-parallel worker-thread counts measured for wasm (site-agent's dist runs
 * in the workers: build first). Prints a table with the load average, then
 * `RESULT train_ratio_wasm_over_torch_<size>px_<arch>=<x> x` (torch ms/step ÷ wasm
 * ms/step, higher is better; `wasm_<n>w` for n workers), the n-worker speed-up over one
 * worker measured interleaved, and peak-memory ratios.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import { LARGE_STEM_MIN_INPUT } from '@fedssl/shared/model';
import { BENCH_ARCHS, type BenchArch } from './lib/byol-step';

const PYTHON = '/usr/bin/python3';
const TORCH_SCRIPT = path.join(__dirname, 'reference', 'byol_step.py');

interface ChildConfig {
  backend: string;
  arch: BenchArch;
  size: number;
  batch: number;
  workers?: number;
  /** Encoder normalization (absent: batch, as children of older trees assume). */
  norm?: 'batch' | 'group';
}

/**
 * Images per batch for `--batch auto`: 32, except ResNet-50 ÷4 below 96 px (CIFAR-style stem:
 * its 16 bottleneck blocks keep 64–512-channel activations of 64×64…8×8 px for the backward
 * pass), whose wasm step at batch 32 aborted in its first step (heap capped at 4 GiB;
 * docs/benchmarks.md).
 */
export function autoBatch(arch: BenchArch, size: number): number {
  return arch === 'resnet50' && size < LARGE_STEM_MIN_INPUT ? 16 : 32;
}

/** A child could not run its config: its own error line, or how it ended. */
class ChildFailed extends Error {}

/** One line of an error for the line protocol. */
function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').slice(0, 400);
}

/** Size of wasm32's linear memory at most (tfjs-backend-wasm's `getHeapMax()`: 4 GiB − 64 KiB). */
const WASM_HEAP_MAX_MIB = 4096;

/**
 * Whether a child's error says that memory ran out. tfjs-backend-wasm's release build just
 * says `Aborted()` when an allocation fails, so the child appends its heap size
 * (`[wasm heap N MiB]`): an abort with the heap within 512 MiB of the cap counts as out of memory.
 */
function isOutOfMemory(message: string): boolean {
  const heap = /\[wasm heap (\d+) MiB\]/.exec(message);
  return (
    /OOM|out of memory|Cannot enlarge memory|Array buffer allocation failed/i.test(message) ||
    (heap !== null && Number(heap[1]) >= WASM_HEAP_MAX_MIB - 512)
  );
}

/** A child process speaking the line protocol of bench/reference/byol_step.py. */
class Runner {
  readonly times: number[] = [];
  /** CPU time (user + system, all threads) per step where the child reports it. */
  readonly cpu: number[] = [];
  readonly losses: number[] = [];
  /** Milliseconds the child took to build the model (and start its worker threads). */
  setupMs = NaN;
  /** Why the child stopped before the end (it is not asked again). */
  failure?: string;
  private stderrTail = '';
  private readonly lines: AsyncIterator<string>;
  private constructor(
    readonly label: string,
    private readonly proc: ChildProcessWithoutNullStreams,
  ) {
    this.lines = readline.createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
    // A child that failed may be gone before it reads `quit`: its exit says so, not an EPIPE.
    proc.stdin.on('error', () => undefined);
    proc.stderr.on('data', (d: Buffer) => {
      process.stderr.write(`[${label}] ${d.toString()}`);
      this.stderrTail = (this.stderrTail + d.toString()).slice(-2000);
    });
  }

  static async start(label: string, cmd: string, args: string[], cwd?: string): Promise<Runner> {
    const r = new Runner(
      label,
      spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) }),
    );
    const ready = await r.read();
    if (ready.startsWith('error ')) throw new ChildFailed(ready.slice(6));
    if (!ready.startsWith('ready')) throw new Error(`${label}: unexpected first line '${ready}'`);
    r.setupMs = Number(ready.split(' ')[3]);
    return r;
  }

  private async read(): Promise<string> {
    const next = await this.lines.next();
    if (next.done) {
      await new Promise((resolve) =>
        this.proc.exitCode !== null || this.proc.signalCode !== null
          ? resolve(0)
          : this.proc.once('exit', resolve),
      );
      const tail = oneLine(this.stderrTail.split('\n').filter(Boolean).slice(-3).join(' '));
      throw new ChildFailed(
        `exited early (code ${this.proc.exitCode}, signal ${this.proc.signalCode})${tail ? `: ${tail}` : ''}`,
      );
    }
    return next.value;
  }

  async ask(cmd: string): Promise<string[]> {
    this.proc.stdin.write(`${cmd}\n`);
    const line = await this.read();
    if (line.startsWith('error ')) throw new ChildFailed(line.slice(6));
    return line.split(' ');
  }

  async step(record: boolean): Promise<void> {
    const [, ms, loss, cpu] = await this.ask('step');
    if (record) {
      this.times.push(Number(ms));
      if (cpu !== undefined) this.cpu.push(Number(cpu));
      this.losses.push(Number(loss));
    }
  }

  /** Peak RSS, and the wasm heap's size (it only grows: its high-water mark) where the child knows it. */
  async memoryMiB(): Promise<{ rss: number; wasmHeap: number }> {
    const [, kib, heap] = await this.ask('rss');
    return { rss: Number(kib) / 1024, wasmHeap: heap === undefined ? NaN : Number(heap) / 2 ** 20 };
  }

  async quit(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.stdin.write('quit\n');
    await exited;
  }
}

/** Child mode: one tfjs backend, one config; answers step/rss/quit on stdin. */
async function child(cfg: ChildConfig): Promise<void> {
  // Loaded here so the parent never initialises TensorFlow.js.
  const { createByolBench } = await import('./lib/byol-step');
  const backend = cfg.backend as 'wasm' | 'cpu';
  const workers = cfg.workers ?? 1;
  let name = `${backend}×${workers}`;
  let wasmHeapBytes = (): number => NaN;
  // With worker threads this thread only coordinates: no TensorFlow.js (nor its heap) here.
  if (workers === 1) {
    const tf = await import('@tensorflow/tfjs-core');
    const { selectBackend } = await import('../site-agent/src/train/backend');
    const { pino } = await import('pino');
    await selectBackend(pino({ level: 'silent' }), backend);
    name = tf.getBackend();
    if (name === 'wasm')
      wasmHeapBytes = () =>
        (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength;
  }
  // Any error (the wasm heap exhausted above all) is one `error` line to the parent, then exit.
  const fail = (e: unknown): never => {
    const heap = wasmHeapBytes();
    const where = Number.isNaN(heap) ? '' : ` [wasm heap ${(heap / 2 ** 20).toFixed(0)} MiB]`;
    process.stdout.write(`error ${oneLine(e)}${where}\n`);
    process.exit(0);
  };
  const t0 = performance.now();
  const bench = await createByolBench(cfg.arch, cfg.size, cfg.batch, {
    workers,
    backend,
    norm: cfg.norm ?? 'batch',
  }).catch(fail);
  process.stdout.write(`ready ${bench.paramCount} ${name} ${(performance.now() - t0).toFixed(0)}\n`);
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (line === 'step') {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const loss = await bench.step().catch(fail);
      const c = process.cpuUsage(c0);
      // CPU time of the whole process (all worker threads): the work a step costs,
      // which the machine's load does not inflate the way it inflates wall time.
      process.stdout.write(
        `ms ${(performance.now() - t0).toFixed(3)} ${loss.toFixed(6)} ${((c.user + c.system) / 1000).toFixed(3)}\n`,
      );
    } else if (line === 'rss') {
      const heap = wasmHeapBytes();
      process.stdout.write(`rss ${process.resourceUsage().maxRSS}${Number.isNaN(heap) ? '' : ` ${heap}`}\n`);
    } else if (line === 'quit') {
      break;
    }
  }
  await bench.dispose();
  process.exit(0);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function torchAvailable(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

interface Row {
  arch: string;
  size: number;
  batch: number;
  framework: string;
  ms: number[];
  cpuMs: number[];
  setupMs: number;
  rssMiB: number;
  /** Size of the wasm heap after the steps (NaN: not a one-thread wasm child). */
  wasmHeapMiB: number;
  loss: number;
}

/** The framework label of wasm with `w` worker threads (`tfjs-wasm` for one, as before). */
function wasmLabel(w: number): string {
  return w === 1 ? 'tfjs-wasm' : `tfjs-wasm-${w}w`;
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv.filter((a) => a !== '--'),
    options: {
      child: { type: 'string' },
      arch: { type: 'string', default: 'tiny,resnet18' },
      size: { type: 'string', default: '32,64' },
      /** `auto` ({@link autoBatch}) or one batch size for every config. */
      batch: { type: 'string', default: 'auto' },
      steps: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      backends: { type: 'string', default: 'wasm,cpu' },
      /** Data-parallel worker-thread counts measured for wasm. */
      workers: { type: 'string', default: '1,2' },
      /** 0: PyTorch is not run. */
      'torch-threads': { type: 'string', default: '2' },
      /** Encoder normalization of every framework: batch (default) or group. */
      norm: { type: 'string', default: 'batch' },
      /** Another checkout (e.g. a git worktree of an older commit) whose wasm path is measured alongside. */
      compare: { type: 'string' },
    },
  });
  if (values.child) return child(JSON.parse(values.child) as ChildConfig);

  const archs = values.arch.split(',') as BenchArch[];
  for (const a of archs)
    if (!BENCH_ARCHS.includes(a)) throw new Error(`unknown --arch ${a}; one of ${BENCH_ARCHS.join(', ')}`);
  const sizes = values.size.split(',').map(Number);
  const batchOf = (arch: BenchArch, size: number): number =>
    values.batch === 'auto' ? autoBatch(arch, size) : Number(values.batch);
  const steps = Number(values.steps);
  const warmup = Number(values.warmup);
  const backends = values.backends.split(',');
  const workerCounts = values.workers.split(',').map(Number);
  if (values.norm !== 'batch' && values.norm !== 'group')
    throw new Error(`unknown --norm ${values.norm}; one of batch, group`);
  const norm = values.norm;
  const torchVersion = Number(values['torch-threads']) > 0 ? torchAvailable() : undefined;
  const rows: Row[] = [];
  /** Configs a child could not run, one line each (printed again before the RESULT lines). */
  const failures: string[] = [];
  console.log(
    `training bench: ${norm} norm, batch ${values.batch === 'auto' ? 'auto (32; ResNet-50 below 96 px: 16)' : values.batch}, ${steps} measured steps after ${warmup} warm-up, node ${process.version}, ` +
      `${os.cpus().length} cpus, load average ${loadAverage()} at start; ` +
      (torchVersion
        ? `torch ${torchVersion}`
        : Number(values['torch-threads']) > 0
          ? `torch not importable by ${PYTHON} (apt-get install python3-torch)`
          : 'torch not run (--torch-threads 0)'),
  );

  for (const arch of archs) {
    for (const size of sizes) {
      const batch = batchOf(arch, size);
      const runners: Runner[] = [];
      const failed = (label: string, e: unknown): void => {
        if (!(e instanceof ChildFailed)) throw e;
        failures.push(
          isOutOfMemory(e.message)
            ? `${arch} ${size}px batch ${batch}: ${label} does not fit in memory (${e.message}); try a smaller --batch`
            : `${arch} ${size}px batch ${batch}: ${label} failed: ${e.message}`,
        );
        console.log(failures[failures.length - 1]);
      };
      const start = async (label: string, cmd: string, args: string[], cwd?: string): Promise<void> => {
        try {
          runners.push(await Runner.start(label, cmd, args, cwd));
        } catch (e) {
          failed(label, e);
        }
      };
      for (const backend of backends) {
        // The pure-JS cpu backend takes tens of seconds per step: only the smallest config.
        if (backend === 'cpu' && !(arch === 'tiny' && size <= 32)) continue;
        for (const workers of backend === 'wasm' ? workerCounts : [1]) {
          const cfg: ChildConfig = { backend, arch, size, batch, workers, norm };
          await start(backend === 'wasm' ? wasmLabel(workers) : `tfjs-${backend}`, process.execPath, [
            process.argv[1]!,
            __filename,
            '--',
            '--child',
            JSON.stringify(cfg),
          ]);
        }
      }
      if (values.compare) {
        const dir = path.resolve(values.compare);
        const cfg: ChildConfig = { backend: 'wasm', arch, size, batch, norm };
        await start(
          'wasm@compare',
          process.execPath,
          [process.argv[1]!, path.join(dir, 'bench', 'training.ts'), '--', '--child', JSON.stringify(cfg)],
          dir,
        );
      }
      if (torchVersion) {
        const cfg = { arch, size, batch, classes: 4, threads: Number(values['torch-threads']), norm };
        await start('torch', PYTHON, [TORCH_SCRIPT, JSON.stringify(cfg)]);
      }
      for (let i = 0; i < warmup + steps; i++) {
        for (const r of runners) {
          // cpu is so slow that one measured step is enough.
          if (r.failure !== undefined || (r.label === 'tfjs-cpu' && i > warmup)) continue;
          try {
            await r.step(i >= warmup);
          } catch (e) {
            r.failure = e instanceof Error ? e.message : String(e);
            failed(r.label, e);
          }
        }
      }
      const done = runners.filter((r) => r.failure === undefined);
      for (const r of done) {
        const memory = await r.memoryMiB();
        rows.push({
          arch,
          size,
          batch,
          framework: r.label,
          ms: r.times,
          cpuMs: r.cpu,
          setupMs: r.setupMs,
          rssMiB: memory.rss,
          wasmHeapMiB: memory.wasmHeap,
          loss: r.losses[r.losses.length - 1] ?? NaN,
        });
      }
      for (const r of runners) await r.quit();
      const last = rows.slice(rows.length - done.length);
      console.log(
        `${arch} ${size}px batch ${batch}: load average ${loadAverage()} after the run of this config`,
      );
      for (const row of last) {
        const m = median(row.ms);
        console.log(
          `${arch.padEnd(8)} ${String(size).padStart(3)}px ${row.framework.padEnd(10)} ` +
            `median ${m.toFixed(0).padStart(6)} ms/step  min ${Math.min(...row.ms)
              .toFixed(0)
              .padStart(6)}  ` +
            `max ${Math.max(...row.ms)
              .toFixed(0)
              .padStart(6)}  ${((batch * 1000) / m).toFixed(1).padStart(6)} img/s  ` +
            `peak RSS ${row.rssMiB.toFixed(0).padStart(5)} MiB  loss ${row.loss.toFixed(4)}` +
            (Number.isFinite(row.wasmHeapMiB) ? `  wasm heap ${row.wasmHeapMiB.toFixed(0)} MiB` : '') +
            (row.cpuMs.length ? `  cpu ${median(row.cpuMs).toFixed(0)} ms/step` : '') +
            (Number.isFinite(row.setupMs) ? `  setup ${row.setupMs.toFixed(0)} ms` : ''),
        );
      }
    }
  }

  console.log(`load average at end: ${loadAverage()}`);
  for (const f of failures) console.log(`not measured: ${f}`);
  for (const arch of archs) {
    for (const size of sizes) {
      const measured = rows.find((r) => r.arch === arch && r.size === size);
      if (measured) console.log(`RESULT train_batch_${size}px_${arch}=${measured.batch} images`);
      const find = (framework: string) =>
        rows.find((r) => r.arch === arch && r.size === size && r.framework === framework);
      const torch = find('torch');
      const one = find(wasmLabel(1));
      for (const w of workerCounts) {
        const wasm = find(wasmLabel(w));
        if (!wasm) continue;
        const tag = w === 1 ? 'wasm' : `wasm_${w}w`;
        if (torch) {
          console.log(
            `RESULT train_ratio_${tag}_over_torch_${size}px_${arch}=${(median(torch.ms) / median(wasm.ms)).toFixed(3)} x`,
          );
          console.log(
            `RESULT train_peak_rss_ratio_${tag}_over_torch_${size}px_${arch}=${(wasm.rssMiB / torch.rssMiB).toFixed(2)} x`,
          );
        }
        console.log(`RESULT train_${tag}_ms_per_step_${size}px_${arch}=${median(wasm.ms).toFixed(0)} ms`);
        if (Number.isFinite(wasm.wasmHeapMiB))
          console.log(`RESULT train_${tag}_heap_mib_${size}px_${arch}=${wasm.wasmHeapMiB.toFixed(0)} MiB`);
        if (wasm.cpuMs.length) {
          console.log(
            `RESULT train_${tag}_cpu_ms_per_step_${size}px_${arch}=${median(wasm.cpuMs).toFixed(0)} ms`,
          );
        }
        if (w !== 1 && one) {
          console.log(
            `RESULT train_speedup_${tag}_over_1w_${size}px_${arch}=${(median(one.ms) / median(wasm.ms)).toFixed(3)} x`,
          );
          // CPU time of n workers over one: the parallel overhead; n ÷ this bounds the speed-up on n idle cores.
          if (wasm.cpuMs.length && one.cpuMs.length) {
            console.log(
              `RESULT train_cpu_cost_${tag}_over_1w_${size}px_${arch}=${(median(wasm.cpuMs) / median(one.cpuMs)).toFixed(3)} x`,
            );
          }
        }
      }
      if (torch) {
        console.log(`RESULT train_torch_ms_per_step_${size}px_${arch}=${median(torch.ms).toFixed(0)} ms`);
        if (torch.cpuMs.length)
          console.log(
            `RESULT train_torch_cpu_ms_per_step_${size}px_${arch}=${median(torch.cpuMs).toFixed(0)} ms`,
          );
      }
      const wasm = one;
      if (!wasm) continue;
      const other = rows.find((r) => r.arch === arch && r.size === size && r.framework === 'wasm@compare');
      if (other) {
        console.log(
          `RESULT train_speedup_wasm_over_compare_${size}px_${arch}=${(median(other.ms) / median(wasm.ms)).toFixed(3)} x`,
        );
      }
    }
  }
}

void main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
