/**
 * Aggregation: GB/s and peak RSS for 2–100 sealed updates of 1M–25M parameters, FedAvg and median vs numpy.
 *
 * Issue 6. For each size, synthetic float32 deltas of a ResNet-18-shaped model are sealed in
 * real update envelopes on disk and aggregated by the coordinator's `aggregateRound` exactly as
 * the round engine does (decrypt + verify → decode → validate → strategy), each (strategy,
 * update count) in its own child process so that its peak RSS is its own. Then the same deltas
 * are written as raw float32 files and `bench/reference/weighted_average.py` computes their
 * example-weighted average with numpy under Debian's /usr/bin/python3 (python3-numpy),
 * streaming one update at a time. numpy's time covers reading the plaintext and the
 * arithmetic only; fedssl's also covers decryption, signature and hash checks, decoding and
 * validation.
 *
 *   npm run bench -- aggregation [--updates 2,10,100] [--params 1e6,25e6] [--strategies fedavg,median]
 *     [--budget-min 9] [--median-max-work 2e10] [--no-reference] [--tmp DIR]
 *
 * Model: ResNet-18 (batch norm, running statistics included) with widths [w, w, 2w, 4w, 8w]
 * and the projector/predictor hidden width chosen so that the shared parameters come within
 * ~0.2 % of each `--params` target (the envelope must decode against a real model layout).
 * Per size, the largest update count's envelopes are written once and the smaller counts
 * aggregate the first k of them; everything is deleted before the next size. A config that
 * does not fit on disk, or in the time budget (`--budget-min`, whole run), is skipped with the
 * reason; so is the median above `--median-max-work` updates² × parameters: it does not hold
 * the updates in memory (it spills each to disk, then reads them back in blocks), but it
 * insertion-sorts the updates' values of every coordinate, O(updates²) each (10 × 25M: 10 s
 * CPU here against FedAvg's 5; 100 × 25M sorts 100 times as much, roughly 10 min of CPU).
 *
 * GB/s = updates × parameters × 4 bytes ÷ seconds (1 GB = 1e9 B); "per core" divides by the
 * child's CPU seconds instead of wall seconds. Prints a table and `RESULT` lines.
 */
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { fromBase64, generatePartyKeys, sealUpdate, toBase64 } from '@fedssl/shared/crypto';
import { resnet18ModelConfig, sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';
import type { UpdateHeader } from '@fedssl/shared/protocol';
import { aggregateRound } from '../coordinator/src/strategies/aggregate-round';
import type { UpdateSource } from '../coordinator/src/strategies';
import { decodeDelta, openEnvelopeFile } from '../coordinator/src/uploads/update-store';

const CHUNK = 1 << 20;
const PYTHON = '/usr/bin/python3';
const REFERENCE = join(__dirname, 'reference', 'weighted_average.py');
/** Left free on the disk besides what a config writes (the lead's experiments write too). */
const DISK_MARGIN = 4e9;
const mib = (kb: number): number => kb / 1024;

// ---------------------------------------------------------------------------- model and data

function paramCount(model: ModelConfig): number {
  return sharedParamSpecs(model).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

function scaledResnet18(w: number, hidden: number): ModelConfig {
  return { ...resnet18ModelConfig(224, [w, w, 2 * w, 4 * w, 8 * w]), norm: 'batch', projectorHidden: hidden };
}

/**
 * A ResNet-18-shaped model with about `target` shared parameters: the widest stem width w whose
 * model (with the smallest heads) stays below the target, then the heads' hidden width (the count
 * is linear in it) to close the gap. Deterministic, so parent and children agree.
 */
function modelFor(target: number): ModelConfig {
  let w = 1;
  while (w < 256 && paramCount(scaledResnet18(w + 1, 4)) <= target) w++;
  const base = paramCount(scaledResnet18(w, 4));
  const perHidden = paramCount(scaledResnet18(w, 5)) - base;
  const hidden = Math.min(8192, Math.max(4, 4 + Math.round((target - base) / perHidden)));
  return scaledResnet18(w, hidden);
}

function zeros(model: ModelConfig): NamedTensors {
  return sharedParamSpecs(model).map((s) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: new Float32Array(s.shape.reduce((a, b) => a * b, 1)),
  }));
}

/** xorshift32 → small deltas in [-0.01, 0.01): deterministic, cheap for millions of values. */
function syntheticDelta(model: ModelConfig, seed: number): NamedTensors {
  let x = (seed * 2654435761) >>> 0 || 1;
  return zeros(model).map((t) => {
    for (let i = 0; i < t.data.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      t.data[i] = ((x >>> 0) / 4294967296 - 0.5) * 0.02;
    }
    return t;
  });
}

const siteId = (k: number): string => `site-${String(k).padStart(3, '0')}`;
const exampleCount = (k: number): number => 100 + k;

function writeAll(path: string, parts: Iterable<Uint8Array>): void {
  const fd = openSync(path, 'w');
  try {
    for (const p of parts) {
      let off = 0;
      while (off < p.length) off += writeSync(fd, p, off, p.length - off);
    }
  } finally {
    closeSync(fd);
  }
}

const bytesOf = (t: NamedTensors): Uint8Array[] =>
  t.map(({ data }) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength));

/** Seals updates 0..count-1 into `dir`; stops early at `deadline` and returns how many it wrote. */
function writeEnvelopes(dir: string, model: ModelConfig, count: number, deadline: number): number {
  const coordinator = generatePartyKeys();
  const site = generatePartyKeys();
  writeFileSync(join(dir, 'box.key'), toBase64(coordinator.box.secretKey));
  for (let k = 0; k < count; k++) {
    if (Date.now() > deadline) return k;
    const sealed = sealUpdate({
      plaintext: encodeWeights(syntheticDelta(model, k + 1)),
      fields: {
        protocolVersion: 1,
        siteId: siteId(k),
        runId: 'bench',
        round: 1,
        taskId: `task-${k}`,
        taskNonce: toBase64(new Uint8Array(32)),
        baseModelHash: '0'.repeat(64),
        exampleCount: exampleCount(k),
        metrics: {},
        createdAt: new Date().toISOString(),
      },
      chunkSize: CHUNK,
      siteSigningSecretKey: site.signing.secretKey,
      coordinatorBoxPublicKey: coordinator.box.publicKey,
    });
    writeAll(join(dir, `${siteId(k)}.env`), sealed.chunks);
    writeFileSync(join(dir, `${siteId(k)}.header.json`), JSON.stringify(sealed.header));
  }
  return count;
}

/** The same deltas as plaintext for numpy: raw float32 in model order, and the example counts. */
function writeRaw(dir: string, model: ModelConfig, count: number): void {
  for (let k = 0; k < count; k++)
    writeAll(join(dir, `update-${k}.f32`), bytesOf(syntheticDelta(model, k + 1)));
  writeFileSync(
    join(dir, 'weights.json'),
    JSON.stringify(Array.from({ length: count }, (_, k) => exampleCount(k))),
  );
}

// ---------------------------------------------------------------------------- child: one config

interface Measured {
  seconds: number;
  cpuSeconds: number;
  baselineKb: number;
  peakKb: number;
}

/**
 * This process's own peak RSS: VmHWM of /proc/self/status. Not `resourceUsage().maxRSS`: on
 * Linux a spawned child's ru_maxrss starts at its parent's RSS at fork (it survives the exec),
 * so with a parent that has just generated 100 updates it measures the parent.
 */
function ownPeakKb(): number {
  try {
    const m = /^VmHWM:\s*(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // Not Linux: fall through.
  }
  return process.resourceUsage().maxRSS;
}

function child(strategy: string, dir: string, updates: number, target: number, out: string): void {
  const model = modelFor(target);
  const boxSecret = fromBase64(readFileSync(join(dir, 'box.key'), 'utf8'));
  const global = zeros(model);
  // Resident now, not the peak so far: loading the modules peaks above it.
  const before = process.memoryUsage().rss / 1024;
  const sources: UpdateSource[] = Array.from({ length: updates }, (_, k) => {
    const header = JSON.parse(readFileSync(join(dir, `${siteId(k)}.header.json`), 'utf8')) as UpdateHeader;
    return {
      siteId: siteId(k),
      exampleCount: header.exampleCount,
      readDelta: () =>
        decodeDelta(openEnvelopeFile(join(dir, `${siteId(k)}.env`), header, boxSecret), model, 1e6),
    };
  });
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const result = aggregateRound({
    strategy,
    dataDir: join(dir, `data-${strategy}`),
    runId: 'bench',
    round: 1,
    baseVersion: 'bench.r0',
    version: 'bench.r1',
    global,
    updates: sources,
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const peakKb = ownPeakKb();
  // Outside the timing: the new weights, for the comparison with numpy's.
  if (out) writeAll(out, bytesOf(result.weights));
  const m: Measured = { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, baselineKb: before, peakKb };
  process.stdout.write(`${JSON.stringify(m)}\n`);
}

// ---------------------------------------------------------------------------- parent

interface Row extends Partial<Measured> {
  who: string; // fedavg, median or numpy
  updates: number;
  label: string;
  params: number;
  skipped?: string;
  maxAbsDiff?: number;
}

function flag(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}

const numbers = (s: string): number[] => s.split(',').map((v) => Number(v));

function sizeLabel(n: number): string {
  if (n >= 1e6 && n % 1e5 === 0) return `${n / 1e6}M`;
  if (n >= 1e3 && n % 100 === 0) return `${n / 1e3}k`;
  return String(n);
}

const freeBytes = (dir: string): number => {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
};

const gb = (bytes: number): string => `${(bytes / 1e9).toFixed(1)} GB`;

function runChild(args: string[], timeoutMs: number): { m?: Measured; error?: string } {
  if (timeoutMs <= 0) return { error: 'time budget spent' };
  const r = spawnSync(process.execPath, [process.argv[1]!, __filename, '--', ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    timeout: timeoutMs,
  });
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.signal)
    return { error: `stopped by ${r.signal} (time budget: ${(timeoutMs / 1000).toFixed(0)} s left)` };
  if (r.status !== 0 || !line.startsWith('{')) {
    const why = (r.stderr ?? '').trim().split('\n').slice(-3).join(' ');
    return { error: `failed (exit ${r.status}): ${why.slice(0, 300)}` };
  }
  return { m: JSON.parse(line) as Measured };
}

function maxAbsDiff(a: string, b: string): number {
  const x = new Float32Array(new Uint8Array(readFileSync(a)).buffer);
  const y = new Float32Array(new Uint8Array(readFileSync(b)).buffer);
  if (x.length !== y.length) return Infinity;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

function numpyAvailable(): string | null {
  const r = spawnSync(PYTHON, ['-c', 'import numpy; print(numpy.__version__)'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function main(): void {
  const args = process.argv.slice(2);
  if (args[0] === '--child')
    return child(args[1]!, args[2]!, Number(args[3]), Number(args[4]), args[5] ?? '');

  const counts = numbers(flag(args, '--updates', '2,10,100')).sort((a, b) => a - b);
  const targets = numbers(flag(args, '--params', '1e6,25e6')).sort((a, b) => a - b);
  const strategies = flag(args, '--strategies', 'fedavg,median').split(',');
  const budgetMs = Number(flag(args, '--budget-min', '9')) * 60_000;
  const medianMax = Number(flag(args, '--median-max-work', '2e10'));
  const root = flag(args, '--tmp', tmpdir());
  const numpy = args.includes('--no-reference') ? null : numpyAvailable();
  const deadline = Date.now() + budgetMs;
  const load0 = loadavg();
  const started = new Date().toISOString();

  console.log(
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB; ` +
      `load average at start ${load0.map((l) => l.toFixed(2)).join(' ')} (${started})`,
  );
  if (!args.includes('--no-reference') && !numpy) {
    console.log(`no numpy reference: ${PYTHON} cannot import numpy (Debian: apt install python3-numpy)`);
  } else if (numpy) console.log(`reference: numpy ${numpy} under ${PYTHON}`);

  const rows: Row[] = [];
  for (const target of targets) {
    const model = modelFor(target);
    const params = paramCount(model);
    const label = sizeLabel(target);
    const bytesPer = params * 4;
    console.log(
      `\n${label}: ResNet-18 widths [${model.widths!.join(', ')}], heads ${model.projectorHidden} wide: ` +
        `${params} parameters, ${(bytesPer / 2 ** 20).toFixed(1)} MiB float32 per update`,
    );
    const dir = mkdtempSync(join(root, 'fedssl-bench-agg-'));
    try {
      // Disk: the envelopes of the largest count that fits, plus the median's spill of a copy.
      const free = freeBytes(dir) - DISK_MARGIN;
      const needs = (n: number): number =>
        n * bytesPer * (1 + 16 / CHUNK) +
        (strategies.includes('median') && n * n * params <= medianMax ? n * bytesPer : 0);
      const runnable = counts.filter((n) => needs(n) <= free);
      for (const n of counts.filter((c) => !runnable.includes(c))) {
        for (const who of [...strategies, ...(numpy ? ['numpy'] : [])]) {
          rows.push({
            who,
            updates: n,
            label,
            params,
            skipped: `disk: needs ${gb(needs(n))} + ${gb(DISK_MARGIN)} margin, ${gb(free + DISK_MARGIN)} free`,
          });
        }
      }
      const nMax = Math.max(0, ...runnable);
      const t0 = Date.now();
      const written = writeEnvelopes(dir, model, nMax, deadline);
      console.log(`${written} sealed updates written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

      for (const n of runnable) {
        for (const strategy of strategies) {
          const row: Row = { who: strategy, updates: n, label, params };
          rows.push(row);
          if (n > written) {
            row.skipped = `time budget spent while writing envelopes (${written} of ${n})`;
          } else if (strategy === 'median' && n * n * params > medianMax) {
            row.skipped =
              `not run: the median insertion-sorts ${n} values for each of ${params} coordinates, O(updates²) ` +
              `each (updates² × params = ${(n * n * params).toExponential(1)} > --median-max-work ${medianMax.toExponential(1)}), ` +
              `after spilling ${gb(n * bytesPer)} to disk`;
          } else {
            const out = strategy === 'fedavg' ? join(dir, `fedssl-${n}.f32`) : '';
            const r = runChild(
              ['--child', strategy, dir, String(n), String(target), out],
              deadline - Date.now(),
            );
            if (r.m) Object.assign(row, r.m);
            else row.skipped = r.error;
          }
          console.log(describe(row));
        }
      }

      // numpy: the envelopes go first (disk, and page cache), then the same deltas as plaintext.
      if (numpy && runnable.length > 0) {
        for (const f of [...Array(nMax).keys()].map((k) => join(dir, `${siteId(k)}.env`)))
          rmSync(f, { force: true });
        const usable = runnable.filter((n) => n <= written);
        writeRaw(dir, model, Math.max(0, ...usable));
        for (const n of runnable) {
          const row: Row = { who: 'numpy', updates: n, label, params };
          rows.push(row);
          if (!usable.includes(n)) {
            row.skipped = 'time budget spent while writing envelopes';
          } else if (Date.now() > deadline) {
            row.skipped = 'time budget spent';
          } else {
            const out = join(dir, `numpy-${n}.f32`);
            const r = spawnSync(PYTHON, [REFERENCE, dir, String(n), '--out', out], { encoding: 'utf8' });
            const line = r.stdout.trim().split('\n').pop() ?? '';
            if (r.status !== 0 || !line.startsWith('{'))
              row.skipped = `failed: ${r.stderr.trim().slice(-300)}`;
            else {
              Object.assign(row, JSON.parse(line) as Measured);
              const fedavg = rows.find((x) => x.who === 'fedavg' && x.updates === n && x.label === label);
              if (fedavg?.seconds !== undefined) {
                fedavg.maxAbsDiff = maxAbsDiff(join(dir, `fedssl-${n}.f32`), out);
              }
            }
          }
          console.log(describe(row));
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const load1 = loadavg();
  console.log(
    `\nload average at end ${load1.map((l) => l.toFixed(2)).join(' ')} (${new Date().toISOString()}); ` +
      `wall time ${((Date.now() - (deadline - budgetMs)) / 1000).toFixed(0)} s`,
  );
  printTable(rows);
  printResults(rows);
}

// ---------------------------------------------------------------------------- output

const bytesOfRow = (r: Row): number => r.updates * r.params * 4;
const gbps = (r: Row): number => bytesOfRow(r) / 1e9 / r.seconds!;
const gbpsPerCore = (r: Row): number => bytesOfRow(r) / 1e9 / r.cpuSeconds!;
const key = (r: Row): string => `${r.updates}x${r.label}`;

function numpyOf(rows: Row[], r: Row): Row | undefined {
  return rows.find((x) => x.who === 'numpy' && x.updates === r.updates && x.label === r.label && x.seconds);
}

function describe(r: Row): string {
  if (r.skipped) return `  ${r.who} ${key(r)}: skipped — ${r.skipped}`;
  return `  ${r.who} ${key(r)}: ${r.seconds!.toFixed(2)} s (${r.cpuSeconds!.toFixed(2)} s CPU), ${gbps(r).toFixed(3)} GB/s, peak RSS ${mib(r.peakKb!).toFixed(0)} MiB`;
}

function printTable(rows: Row[]): void {
  const sorted = [...rows].sort(
    (a, b) => a.params - b.params || a.updates - b.updates || a.who.localeCompare(b.who),
  );
  console.log(
    '\n| updates × params | what | data (GB) | time (s) | CPU (s) | GB/s | GB/s per core | RSS before (MiB) | peak RSS (MiB) | ÷ numpy (wall) | ÷ numpy (per core) | max abs diff vs numpy |',
  );
  console.log(
    '| ---------------- | ---- | --------: | -------: | ------: | ---: | ------------: | ---------------: | -------------: | -------------: | -----------------: | --------------------: |',
  );
  for (const r of sorted) {
    const data = (bytesOfRow(r) / 1e9).toFixed(2);
    if (r.skipped || r.seconds === undefined) {
      console.log(`| ${key(r)} | ${r.who} | ${data} | skipped: ${r.skipped ?? '?'} | | | | | | | | |`);
      continue;
    }
    const np = r.who === 'numpy' ? undefined : numpyOf(rows, r);
    const ratio = np ? (gbps(r) / gbps(np)).toFixed(3) : '';
    const ratioCore = np ? (gbpsPerCore(r) / gbpsPerCore(np)).toFixed(3) : '';
    const diff = r.maxAbsDiff === undefined ? '' : r.maxAbsDiff.toExponential(1);
    console.log(
      `| ${key(r)} | ${r.who} | ${data} | ${r.seconds.toFixed(2)} | ${r.cpuSeconds!.toFixed(2)} | ${gbps(r).toFixed(3)} | ${gbpsPerCore(r).toFixed(3)} | ${mib(r.baselineKb!).toFixed(0)} | ${mib(r.peakKb!).toFixed(0)} | ${ratio} | ${ratioCore} | ${diff} |`,
    );
  }
}

function printResults(rows: Row[]): void {
  for (const r of rows) {
    if (r.seconds === undefined) continue;
    const name = r.who === 'numpy' ? `numpy_${key(r)}` : `${r.who}_${key(r)}`;
    console.log(`RESULT aggregation_${name}_gbps=${gbps(r).toFixed(3)} GB/s`);
    console.log(`RESULT aggregation_${name}_gbps_per_core=${gbpsPerCore(r).toFixed(3)} GB/s`);
    console.log(`RESULT aggregation_${name}_peak_rss=${mib(r.peakKb!).toFixed(0)} MiB`);
  }
  for (const r of rows) {
    const np = r.who === 'numpy' || r.seconds === undefined ? undefined : numpyOf(rows, r);
    if (!np) continue;
    console.log(
      `RESULT aggregation_ratio_fedssl_over_numpy_${r.who}_${key(r)}=${(gbps(r) / gbps(np)).toFixed(3)} x`,
    );
    console.log(
      `RESULT aggregation_ratio_fedssl_over_numpy_per_core_${r.who}_${key(r)}=${(gbpsPerCore(r) / gbpsPerCore(np)).toFixed(3)} x`,
    );
    if (r.maxAbsDiff !== undefined) {
      console.log(
        `RESULT aggregation_${r.who}_vs_numpy_${key(r)}_max_abs_diff=${r.maxAbsDiff.toExponential(2)}`,
      );
    }
  }
}

main();
