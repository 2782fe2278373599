import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { initSharedWeights, tinyModelConfig, trainingConfigSchema } from '@fedssl/shared/model';
import { selectBackend } from './backend';
import { trainRound } from './trainer';
import { registerWasmTrainingKernels } from './wasm-kernels';

const logger = pino({ level: 'silent' });

beforeAll(async () => {
  const info = await selectBackend(logger, 'wasm');
  expect(info.name).toBe('wasm');
});

/** Gradients of Σ conv2d(x, w)·r w.r.t. x and w on one backend (r fixes dy). */
async function convGrads(
  backend: string,
  xv: Float32Array,
  xs: number[],
  wv: Float32Array,
  ws: number[],
  rv: Float32Array,
  stride: number,
  pad: 'same' | 'valid' | number,
) {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const x = tf.tensor4d(xv, xs as [number, number, number, number]);
    const w = tf.tensor4d(wv, ws as [number, number, number, number]);
    const f = (a: tf.Tensor, b: tf.Tensor) => {
      const y = tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, pad);
      return tf.sum(tf.mul(y, tf.tensor(rv.subarray(0, y.size), y.shape)));
    };
    const [gx, gw] = tf.grads(f)([x, w]);
    return [gx!.dataSync() as Float32Array, gw!.dataSync() as Float32Array];
  });
}

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

const random = (n: number, seed: number) => {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1);
};

describe('wasm training kernels', () => {
  it('registration is idempotent and provides Conv2DBackpropFilter', () => {
    registerWasmTrainingKernels();
    registerWasmTrainingKernels();
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('Conv2DBackpropInput', 'wasm')).toBeDefined();
  });

  const table: [number[], number[], number, 'same' | 'valid' | number][] = [
    [[2, 8, 8, 3], [3, 3, 3, 4], 1, 1],
    [[2, 8, 8, 3], [3, 3, 3, 4], 2, 1],
    [[2, 9, 9, 3], [3, 3, 3, 4], 2, 'same'],
    [[2, 9, 9, 3], [3, 3, 3, 4], 2, 'valid'],
    [[2, 8, 8, 3], [3, 3, 3, 4], 1, 'valid'],
    [[2, 8, 8, 3], [1, 1, 3, 4], 2, 0],
    [[3, 7, 7, 2], [3, 3, 2, 5], 1, 'same'],
    [[1, 16, 16, 1], [7, 7, 1, 4], 2, 3],
    [[4, 12, 10, 6], [3, 3, 6, 8], 2, 'same'],
  ];
  for (const [xs, ws, stride, pad] of table) {
    it(`matches cpu: x=[${xs}] w=[${ws}] stride=${stride} pad=${pad}`, async () => {
      const xv = random(
        xs.reduce((a, b) => a * b),
        1,
      );
      const wv = random(
        ws.reduce((a, b) => a * b),
        2,
      );
      const rv = random(xs.reduce((a, b) => a * b) * ws[3]!, 3);
      const [wx, ww] = await convGrads('wasm', xv, xs, wv, ws, rv, stride, pad);
      const [cx, cw] = await convGrads('cpu', xv, xs, wv, ws, rv, stride, pad);
      await tf.setBackend('wasm');
      expect(wx!.length).toBe(cx!.length);
      expect(ww!.length).toBe(cw!.length);
      expect(relErr(wx!, cx!)).toBeLessThan(1e-4);
      expect(relErr(ww!, cw!)).toBeLessThan(1e-4);
    });
  }

  it('runs a full training step of the tiny model on wasm without leaking tensors', async () => {
    await tf.setBackend('wasm');
    const model = tinyModelConfig(32);
    const n = 8;
    const dataset = {
      count: n,
      height: 32,
      width: 32,
      pixels: random(n * 32 * 32, 4).map((v) => (v + 1) / 2),
      metadataLabels: Int32Array.from({ length: n }, (_, i) => i % 2),
      metadataClasses: 2,
    };
    const training = trainingConfigSchema.parse({ batchSize: 4, maxStepsPerRound: 1 });
    const before = tf.memory().numTensors;
    const r = await trainRound({
      model,
      training,
      globalWeights: initSharedWeights(model, 1),
      dataset,
      seed: 1,
      logger,
    });
    expect(tf.getBackend()).toBe('wasm');
    expect(r.metrics.steps).toBe(1);
    expect(Number.isFinite(r.metrics.loss)).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
  });
});
