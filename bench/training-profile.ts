/**
 * Where the time of one BYOL + metadata step goes on a tfjs backend: per-kernel wall
 * time from `tf.profile`, summed by kernel name (and by shape for convolutions).
 *
 *   npx vite-node bench/training-profile.ts [-- --arch tiny --size 64 --batch 32 --backend wasm --steps 3]
 *   npx vite-node bench/training-profile.ts -- --clock cpu --profile-steps 3   # CPU time per kernel (load-robust), mean of 3 steps
 *   npx vite-node bench/training-profile.ts -- --norm group   # a group-norm encoder (default: batch norm)
 *
 * `--clock cpu` wraps every kernel of the backend and charges each call the process CPU
 * time it used minus that of the kernels it called (self time): on a loaded machine
 * `tf.profile`'s wall-clock kernel times mostly measure the scheduler.
 *
 * Also prints the wasm heap's size (it never shrinks: its high-water mark), peak RSS and
 * the most tensors alive at once during the profiled step.
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { pino } from 'pino';
import { selectBackend } from '../site-agent/src/train/backend';
import { createByolBench, type BenchArch } from './lib/byol-step';

/** Size of the wasm backend's linear memory (it only grows): the heap's high-water mark. */
function wasmHeapBytes(): number {
  if (tf.getBackend() !== 'wasm') return 0;
  const b = tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } };
  return b.wasm.HEAPU8.buffer.byteLength;
}

interface Tally {
  ms: number;
  n: number;
}

function add(map: Map<string, Tally>, key: string, ms: number): void {
  const a = map.get(key) ?? { ms: 0, n: 0 };
  a.ms += ms;
  a.n++;
  map.set(key, a);
}

/** Kernels whose time is also reported by input shapes. */
const BY_SHAPE =
  /^(Conv2D|Mean|Sum|Multiply|Add|Sub|Transpose|DepthwiseConv2dNative|FusedDepthwiseConv2D|BatchMatMul|Identity)/;

/**
 * Re-registers every kernel of `backendName` with a wrapper that charges the call its
 * process CPU time minus that of the kernels it called (nested kernels run through the
 * registry too), by name and, for the kernels matching BY_SHAPE, by input shapes.
 */
function profileCpu(backendName: string): { byName: Map<string, Tally>; byShape: Map<string, Tally> } {
  const byName = new Map<string, Tally>();
  const byShape = new Map<string, Tally>();
  const children: number[] = [];
  for (const k of tf.getKernelsForBackend(backendName)) {
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, backendName);
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        children.push(0);
        const t0 = process.cpuUsage();
        try {
          return inner(args);
        } finally {
          const u = process.cpuUsage(t0);
          const ms = (u.user + u.system) / 1000;
          const self = ms - children.pop()!;
          if (children.length) children[children.length - 1]! += ms;
          add(byName, k.kernelName, self);
          if (BY_SHAPE.test(k.kernelName)) {
            // Optional inputs (a fused kernel's absent bias or PReLU weights) are undefined.
            const shapes = Object.values(args.inputs)
              .filter((t) => t !== undefined)
              .map((t) => `[${(t as tf.TensorInfo).shape.join(',')}]`);
            add(byShape, `${k.kernelName} ${shapes.join(' ')}`, self);
          }
        }
      },
    });
  }
  return { byName, byShape };
}

function printTallies(byName: Map<string, Tally>, byShape: Map<string, Tally>, top: number): void {
  const total = [...byName.values()].reduce((a, b) => a + b.ms, 0);
  for (const [name, a] of [...byName].sort((x, y) => y[1].ms - x[1].ms).slice(0, top)) {
    console.log(
      `${name.padEnd(24)} ${a.ms.toFixed(1).padStart(8)} ms ${((100 * a.ms) / total).toFixed(1).padStart(5)} %  ×${a.n}`,
    );
  }
  console.log('by input shapes:');
  for (const [key, a] of [...byShape].sort((x, y) => y[1].ms - x[1].ms).slice(0, top)) {
    console.log(`${a.ms.toFixed(1).padStart(8)} ms ×${a.n}  ${key}`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((a) => a !== '--'),
    options: {
      arch: { type: 'string', default: 'tiny' },
      size: { type: 'string', default: '64' },
      batch: { type: 'string', default: '32' },
      backend: { type: 'string', default: 'wasm' },
      /** Encoder normalization: batch (default, as every recorded figure) or group (the product default). */
      norm: { type: 'string', default: 'batch' },
      top: { type: 'string', default: '25' },
      /** Unprofiled steps timed after the warm-up (0: none). */
      steps: { type: 'string', default: '0' },
      clock: { type: 'string', default: 'wall' },
      /** `--clock cpu`: profiled steps, tallies summed then divided by this (one step's calls vary ±50 %). */
      'profile-steps': { type: 'string', default: '1' },
    },
  });
  if (values.norm !== 'batch' && values.norm !== 'group')
    throw new Error(`unknown --norm ${values.norm}; one of batch, group`);
  await selectBackend(pino({ level: 'silent' }), values.backend as 'wasm' | 'cpu');
  const bench = await createByolBench(values.arch as BenchArch, Number(values.size), Number(values.batch), {
    norm: values.norm,
  });
  const heapMiB = () => wasmHeapBytes() / 2 ** 20;
  const heap0 = heapMiB();
  await bench.step(); // warm-up
  const heap1 = heapMiB();
  const steps = Number(values.steps);
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    await bench.step();
    times.push(performance.now() - t);
  }
  if (values.clock === 'cpu') {
    const { byName, byShape } = profileCpu(tf.getBackend());
    const profiled = Math.max(1, Number(values['profile-steps']));
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    for (let i = 0; i < profiled; i++) await bench.step();
    const c = process.cpuUsage(c0);
    // Per step: every tally divided by the number of profiled steps.
    for (const map of [byName, byShape])
      for (const a of map.values()) {
        a.ms /= profiled;
        a.n /= profiled;
      }
    const kernels = [...byName.values()].reduce((a, b) => a + b.ms, 0);
    const calls = [...byName.values()].reduce((a, b) => a + b.n, 0);
    console.log(
      `${values.arch} ${values.size}px batch ${values.batch} ${values.norm} norm on ${tf.getBackend()}, mean of ${profiled} profiled step(s): ` +
        `step ${((c.user + c.system) / 1000 / profiled).toFixed(0)} ms CPU, ` +
        `${((performance.now() - w0) / profiled).toFixed(0)} ms wall; kernels ${kernels.toFixed(0)} ms CPU (self time), ${calls} kernel calls; ` +
        `wasm heap ${heapMiB().toFixed(0)} MiB, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`,
    );
    printTallies(byName, byShape, Number(values.top));
    await bench.dispose();
    return;
  }
  const t0 = performance.now();
  const info = await tf.profile(async () => {
    await bench.step();
  });
  const wall = performance.now() - t0;
  // Live tensors at their high-water mark: the engine's count after each kernel.
  const peakTensors = Math.max(0, ...info.kernels.map((k) => k.totalTensorsSnapshot));
  times.sort((a, b) => a - b);
  console.log(
    `unprofiled steps: median ${times.length ? times[Math.floor(times.length / 2)]!.toFixed(0) : '-'} ms ` +
      `(${times.map((t) => t.toFixed(0)).join(', ')}); wasm heap ${heap0.toFixed(0)} MiB after setup, ` +
      `${heap1.toFixed(0)} after the warm-up step, ${heapMiB().toFixed(0)} at the end; ` +
      `peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB; live tensors peak ${peakTensors}`,
  );
  const byName = new Map<string, { ms: number; n: number }>();
  const byShape = new Map<string, { ms: number; n: number }>();
  let total = 0;
  for (const k of info.kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    total += ms;
    const a = byName.get(k.name) ?? { ms: 0, n: 0 };
    a.ms += ms;
    a.n++;
    byName.set(k.name, a);
    if (k.name.startsWith('Conv2D') || k.name === 'Mean' || k.name === 'Sum') {
      const key = `${k.name} ${k.inputShapes.map((s) => `[${s?.join(',')}]`).join(' ')}`;
      const b = byShape.get(key) ?? { ms: 0, n: 0 };
      b.ms += ms;
      b.n++;
      byShape.set(key, b);
    }
  }
  console.log(
    `${values.arch} ${values.size}px batch ${values.batch} on ${tf.getBackend()}: step ${wall.toFixed(0)} ms wall ` +
      `(profiled), kernels ${total.toFixed(0)} ms, ${info.kernels.length} kernel calls, peak bytes ${(info.peakBytes / 2 ** 20).toFixed(0)} MiB`,
  );
  const top = Number(values.top);
  for (const [name, a] of [...byName].sort((x, y) => y[1].ms - x[1].ms).slice(0, top)) {
    console.log(
      `${name.padEnd(24)} ${a.ms.toFixed(1).padStart(8)} ms ${((100 * a.ms) / total).toFixed(1).padStart(5)} %  ×${a.n}`,
    );
  }
  console.log('convolutions and reductions by shape:');
  for (const [key, a] of [...byShape].sort((x, y) => y[1].ms - x[1].ms).slice(0, top)) {
    console.log(`${a.ms.toFixed(1).padStart(8)} ms ×${a.n}  ${key}`);
  }
  await bench.dispose();
}

void main();
