import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { batchNormCore, type MomentsReducer } from '@fedssl/shared/model/tf';
import { selectBackend } from './backend';
import { random, relErr } from './numeric-test-util';

beforeAll(async () => {
  const info = await selectBackend(pino({ level: 'silent' }), 'wasm');
  expect(info.name).toBe('wasm');
});

/** A one-worker reducer: the global batch is this worker's (exercises the reducer path). */
const soloReducer: MomentsReducer = {
  moments: (count, mean, m2) => ({ count, mean: tf.clone(mean), variance: tf.div(m2, count) }),
  sums: (a, b) => [tf.clone(a), tf.clone(b)],
};

type Variant = { relu: boolean; residual: boolean; reducer: boolean };

/** Output and gradients (x, γ, β, residual) of Σ unit(x)·r for one backend. */
async function unitGrads(
  backend: string,
  shape: number[],
  v: Variant,
  impl: 'core' | 'reference',
): Promise<{ shapes: number[][]; data: Float32Array[] }> {
  await tf.setBackend(backend);
  const c = shape[shape.length - 1]!;
  const n = shape.reduce((a, b) => a * b);
  const axes = shape.slice(0, -1).map((_, i) => i);
  return tf.tidy(() => {
    // An offset mean and a spread that differs per channel, as conv outputs have.
    const x = tf.tensor(
      random(n, 11).map((u, i) => (2 + (i % c)) * u + 0.7),
      shape,
    );
    const g = tf.tensor1d(random(c, 12).map((u) => 1 + u / 2));
    const b = tf.tensor1d(random(c, 13));
    const res = tf.tensor(random(n, 15), shape);
    const r = tf.tensor(random(n, 14), shape);
    const unit = (xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor, ri: tf.Tensor) => {
      if (impl === 'core') {
        return batchNormCore(xi, gi, bi, undefined, v.reducer ? soloReducer : undefined, {
          relu: v.relu,
          ...(v.residual ? { residual: ri } : {}),
        });
      }
      // Autodiff of plain ops: moments, scale/shift, add, ReLU.
      const { mean, variance } = tf.moments(xi, axes);
      const scale = tf.mul(gi, tf.rsqrt(tf.add(variance, 1e-5)));
      let y = tf.add(tf.mul(xi, scale), tf.sub(bi, tf.mul(mean, scale)));
      if (v.residual) y = tf.add(y, ri);
      return v.relu ? tf.relu(y) : y;
    };
    // Gradients with respect to the residual only where the unit reads it.
    const loss = (...ins: tf.Tensor[]) => tf.sum(tf.mul(unit(ins[0]!, ins[1]!, ins[2]!, ins[3] ?? res), r));
    const grads = tf.grads(loss)(v.residual ? [x, g, b, res] : [x, g, b]);
    const out = [unit(x, g, b, res), ...grads];
    return { shapes: out.map((t) => t.shape), data: out.map((t) => t.dataSync() as Float32Array) };
  });
}

describe('batch norm + residual + ReLU as one unit (hand-written gradient)', () => {
  const variants: Variant[] = [
    { relu: false, residual: false, reducer: false },
    { relu: true, residual: false, reducer: false },
    { relu: true, residual: true, reducer: false },
    { relu: false, residual: true, reducer: false },
    { relu: true, residual: true, reducer: true },
    { relu: true, residual: false, reducer: true },
  ];
  for (const shape of [
    [4, 5, 5, 3],
    [6, 7],
    [4, 8, 8, 16],
  ]) {
    for (const v of variants) {
      it(`batch norm unit equals autodiff on cpu: [${shape}] relu=${v.relu} residual=${v.residual} reducer=${v.reducer}`, async () => {
        const before = tf.memory().numTensors;
        const wasm = await unitGrads('wasm', shape, v, 'core');
        const cpu = await unitGrads('cpu', shape, v, 'core');
        const ref = await unitGrads('cpu', shape, v, 'reference');
        await tf.setBackend('wasm');
        expect(tf.memory().numTensors).toBe(before);
        expect(wasm.shapes).toEqual(ref.shapes);
        expect(cpu.shapes).toEqual(ref.shapes);
        for (let i = 0; i < ref.data.length; i++) {
          expect(relErr(wasm.data[i]!, ref.data[i]!), `wasm output ${i}`).toBeLessThan(1e-4);
          expect(relErr(cpu.data[i]!, ref.data[i]!), `cpu output ${i}`).toBeLessThan(1e-4);
        }
      });
    }
  }
});
