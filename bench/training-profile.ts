/**
 * Where the time of one BYOL + metadata step goes on a tfjs backend: per-kernel wall
 * time from `tf.profile`, summed by kernel name (and by shape for convolutions).
 *
 *   npx vite-node bench/training-profile.ts [-- --arch tiny --size 64 --batch 32 --backend wasm]
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { pino } from 'pino';
import { selectBackend } from '../site-agent/src/train/backend';
import { createByolBench, type BenchArch } from './lib/byol-step';

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((a) => a !== '--'),
    options: {
      arch: { type: 'string', default: 'tiny' },
      size: { type: 'string', default: '64' },
      batch: { type: 'string', default: '32' },
      backend: { type: 'string', default: 'wasm' },
      top: { type: 'string', default: '25' },
    },
  });
  await selectBackend(pino({ level: 'silent' }), values.backend as 'wasm' | 'cpu');
  const bench = await createByolBench(values.arch as BenchArch, Number(values.size), Number(values.batch));
  await bench.step(); // warm-up
  const t0 = performance.now();
  const info = await tf.profile(async () => {
    await bench.step();
  });
  const wall = performance.now() - t0;
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
