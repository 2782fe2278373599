import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { initSharedWeights, tinyModelConfig, trainingConfigSchema } from '@fedssl/shared/model';
import { batchNormCore } from '@fedssl/shared/model/tf';
import { selectBackend } from './backend';
import { random, relErr } from './numeric-test-util';
import { trainRound } from './trainer';
import { registerWasmTrainingKernels, simdKernelsInUse } from './wasm-kernels';

const logger = pino({ level: 'silent' });

beforeAll(async () => {
  const info = await selectBackend(logger, 'wasm');
  expect(info.name).toBe('wasm');
});

/** Gradients of Σ conv2d(x, w)·r w.r.t. x and w on one backend (r fixes dy), and conv2d(x, w) itself. */
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
    const y = tf.conv2d(x, w, stride, pad);
    return [gx!.dataSync() as Float32Array, gw!.dataSync() as Float32Array, y.dataSync() as Float32Array];
  });
}

describe('wasm training kernels', () => {
  it('registration is idempotent and provides Conv2DBackpropFilter', () => {
    registerWasmTrainingKernels();
    registerWasmTrainingKernels();
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('Conv2DBackpropInput', 'wasm')).toBeDefined();
    expect(tf.getKernel('Sum', 'wasm')).toBeDefined();
    expect(tf.getKernel('Mean', 'wasm')).toBeDefined();
  });

  it("runs fedssl's SIMD convolution kernels on the backend's heap (the cases below test them)", () => {
    expect(simdKernelsInUse()).toEqual(['conv', 'dw', 'channel']);
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
    [[2, 7, 7, 3], [3, 3, 3, 4], 2, 1],
    [[2, 7, 9, 3], [1, 1, 3, 4], 2, 0],
    [[2, 10, 11, 2], [3, 3, 2, 3], 3, 1],
    [[2, 11, 11, 2], [5, 5, 2, 3], 3, 'valid'],
    [[2, 16, 16, 1], [3, 3, 1, 8], 1, 1],
    // Channels in multiples of 4: dW runs fedssl's SIMD kernel (4×8 and 4×4 tiles, padding, strides).
    [[2, 8, 8, 4], [3, 3, 4, 8], 1, 1],
    [[2, 9, 9, 8], [3, 3, 8, 12], 2, 'same'],
    [[3, 7, 7, 4], [1, 1, 4, 4], 2, 0],
    [[2, 10, 11, 4], [3, 3, 4, 16], 3, 1],
    [[2, 11, 11, 4], [5, 5, 4, 8], 3, 'valid'],
    [[1, 13, 6, 12], [3, 3, 12, 20], 1, 'same'],
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
      const [wx, ww, wy] = await convGrads('wasm', xv, xs, wv, ws, rv, stride, pad);
      const [cx, cw, cy] = await convGrads('cpu', xv, xs, wv, ws, rv, stride, pad);
      await tf.setBackend('wasm');
      expect(relErr(wy!, cy!)).toBeLessThan(1e-4);
      expect(wx!.length).toBe(cx!.length);
      expect(ww!.length).toBe(cw!.length);
      expect(relErr(wx!, cx!)).toBeLessThan(1e-4);
      expect(relErr(ww!, cw!)).toBeLessThan(1e-4);
    });
  }

  const reductions: [number[], number[], boolean][] = [
    [[4, 6, 6, 5], [0, 1, 2], false],
    [[4, 6, 6, 5], [0, 1, 2], true],
    // NHWC over N, H, W: two average poolings (an H×W window, then one over N)
    [[16, 64, 64, 4], [0, 1, 2], false],
    [[1, 7, 9, 3], [0, 1, 2], false],
    [[5, 1, 1, 7], [0, 1, 2], true],
    [[3, 7, 9, 2], [2, 0, 1], false],
    [[64, 17], [0], false],
    [[3, 4, 5], [0, 1, 2], false],
    [[3, 4, 5], [1, 0], true],
    // NHWC over H, W only (group norm, global average pooling): one H×W average pooling
    [[4, 6, 6, 5], [1, 2], false],
    [[4, 6, 6, 5], [2, 1], true],
    [[2, 64, 64, 16], [1, 2], true],
    [[3, 1, 1, 8], [1, 2], true],
    [[1, 7, 9, 3], [1, 2], false],
    [[3, 4, 5], [2], false], // innermost axis: the backend's own kernel
    [[3, 4, 5], [0, 2], false], // not a leading prefix: the backend's own kernel
  ];
  for (const op of ['sum', 'mean'] as const) {
    for (const [shape, axes, keepDims] of reductions) {
      it(`${op} matches cpu: x=[${shape}] axes=[${axes}] keepDims=${keepDims}`, async () => {
        const xv = random(
          shape.reduce((a, b) => a * b),
          5,
        );
        const run = async (backend: string) => {
          await tf.setBackend(backend);
          return tf.tidy(() => {
            const y = tf[op](tf.tensor(xv, shape), axes, keepDims);
            return { shape: y.shape, data: y.dataSync() as Float32Array };
          });
        };
        const w = await run('wasm');
        const c = await run('cpu');
        await tf.setBackend('wasm');
        expect(w.shape).toEqual(c.shape);
        expect(relErr(w.data, c.data)).toBeLessThan(1e-4);
      });
    }
  }

  // Per-channel and per-(sample, channel) operands (fedssl's SIMD channel op from 4096 elements
  // on, lanes of 4 or a scalar loop) and the backend's own broadcasting kernel for everything else.
  const channelOps: [number[], number[]][] = [
    [[4, 32, 32, 5], [5]],
    [
      [4, 32, 32, 5],
      [1, 1, 1, 5],
    ],
    [[5], [4, 32, 32, 5]],
    [[2, 40, 60], [60]],
    [[4, 6, 6, 5], [5]], // below the size threshold
    [
      [4, 32, 32, 5],
      [4, 32, 32, 5],
    ], // same shape
    [
      [4, 32, 32, 5],
      [4, 1, 1, 5],
    ], // one value per (sample, channel), 5 channels: the scalar loop
    [
      [4, 32, 32, 16],
      [4, 1, 1, 16],
    ], // group norm's per-(sample, channel) scale/shift
    [
      [4, 1, 1, 16],
      [4, 32, 32, 16],
    ],
    [[4, 32, 32, 16], [16]],
    [
      [4, 32, 32, 16],
      [4, 32, 1, 16],
    ], // not per channel
  ];
  for (const op of ['mul', 'add', 'sub'] as const) {
    for (const [as, bs] of channelOps) {
      it(`${op} matches cpu: [${as}] and [${bs}]`, async () => {
        const av = random(
          as.reduce((p, q) => p * q),
          21,
        );
        const bv = random(
          bs.reduce((p, q) => p * q),
          22,
        );
        const run = async (backend: string) => {
          await tf.setBackend(backend);
          return tf.tidy(() => {
            const y = tf[op](tf.tensor(av, as), tf.tensor(bv, bs));
            return { shape: y.shape, data: y.dataSync() as Float32Array };
          });
        };
        const w = await run('wasm');
        const c = await run('cpu');
        await tf.setBackend('wasm');
        expect(w.shape).toEqual(c.shape);
        expect(relErr(w.data, c.data)).toBeLessThan(1e-6);
      });
    }
  }

  for (const backend of ['wasm', 'cpu']) {
    for (const shape of [
      [4, 5, 5, 3],
      [6, 7],
    ]) {
      it(`batch norm's hand-written gradient equals autodiff of moments + scale/shift on ${backend}: [${shape}]`, async () => {
        await tf.setBackend(backend);
        const c = shape[shape.length - 1]!;
        const axes = shape.slice(0, -1).map((_, i) => i);
        const n = shape.reduce((a, b) => a * b);
        const before = tf.memory().numTensors;
        const x = tf.tensor(
          random(n, 11).map((v) => 3 * v + 0.5),
          shape,
        );
        const g = tf.tensor1d(random(c, 12).map((v) => 1 + v / 2));
        const b = tf.tensor1d(random(c, 13));
        const r = tf.tensor(random(n, 14), shape);
        const reference = (xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) => {
          const { mean, variance } = tf.moments(xi, axes);
          const scale = tf.mul(gi, tf.rsqrt(tf.add(variance, 1e-5)));
          return tf.add(tf.mul(xi, scale), tf.sub(bi, tf.mul(mean, scale)));
        };
        const loss = (bn: typeof reference) => (xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) =>
          tf.sum(tf.mul(bn(xi, gi, bi), r));
        const mine = tf.tidy(() => [
          batchNormCore(x, g, b),
          ...tf.grads(loss((xi, gi, bi) => batchNormCore(xi, gi, bi)))([x, g, b]),
        ]);
        const ref = tf.tidy(() => [reference(x, g, b), ...tf.grads(loss(reference))([x, g, b])]);
        for (let i = 0; i < 4; i++) {
          expect(mine[i]!.shape).toEqual(ref[i]!.shape);
          expect(
            relErr(mine[i]!.dataSync() as Float32Array, ref[i]!.dataSync() as Float32Array),
          ).toBeLessThan(1e-5);
        }
        tf.dispose([...mine, ...ref, x, g, b, r]);
        expect(tf.memory().numTensors).toBe(before);
        await tf.setBackend('wasm');
      });
    }
  }

  // [a shape, b shape, transposeA, transposeB]: a Linear layer's gradients (xᵀ·dy, dy·Wᵀ) and
  // cases left to the backend's own kernel (batched, a vector, too small).
  const products: [number[], number[], boolean, boolean][] = [
    [[64, 96], [64, 80], true, false],
    [[64, 80], [96, 80], false, true],
    [[16, 96], [512, 96], false, true], // computed as (B·Aᵀ)ᵀ: B is the large one
    [[96, 64], [80, 96], true, true],
    [[1, 64, 96], [1, 64, 80], true, false],
    [[2, 64, 96], [2, 64, 80], true, false],
    [[64, 96], [64, 1], true, false],
    [[8, 9], [8, 7], true, false],
  ];
  for (const [as, bs, ta, tb] of products) {
    it(`matMul matches cpu: [${as}]${ta ? 'ᵀ' : ''} · [${bs}]${tb ? 'ᵀ' : ''}, leaks nothing`, async () => {
      const av = random(
        as.reduce((x, y) => x * y),
        6,
      );
      const bv = random(
        bs.reduce((x, y) => x * y),
        7,
      );
      const run = async (backend: string) => {
        await tf.setBackend(backend);
        const before = tf.memory().numTensors;
        const out = tf.tidy(
          () => tf.matMul(tf.tensor(av, as), tf.tensor(bv, bs), ta, tb).dataSync() as Float32Array,
        );
        expect(tf.memory().numTensors).toBe(before);
        return out;
      };
      const w = await run('wasm');
      const c = await run('cpu');
      await tf.setBackend('wasm');
      expect(w.length).toBe(c.length);
      expect(relErr(w, c)).toBeLessThan(1e-5);
    });
  }

  it('Identity (tf.clone) shares the bytes: no copy, and the clone outlives its source', async () => {
    await tf.setBackend('wasm');
    const before = tf.memory().numTensors;
    const buffersBefore = tf.memory().numDataBuffers;
    const x = tf.tensor2d(random(64 * 32, 4), [64, 32]);
    const values = x.dataSync().slice();
    const y = tf.clone(x);
    // One data buffer for both tensors (the backend's own Identity made a second one).
    expect(tf.memory().numDataBuffers - buffersBefore).toBe(1);
    x.dispose();
    expect(y.dataSync()).toEqual(values);
    const z = tf.add(y, 1);
    expect(z.dataSync()[5]).toBeCloseTo(values[5]! + 1, 6);
    tf.dispose([y, z]);
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.memory().numDataBuffers).toBe(buffersBefore);
  });

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
