import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { groupNormCore } from '@fedssl/shared/model/tf';
import { selectBackend } from './backend';
import { random } from './numeric-test-util';

beforeAll(async () => {
  const info = await selectBackend(pino({ level: 'silent' }), 'wasm');
  expect(info.name).toBe('wasm');
});

/** Largest absolute difference over the reference's largest magnitude (absolute where that is 0). */
function err(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i]!)) return Infinity;
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}

type Variant = { relu: boolean; residual: boolean };

/** Autodiff of the composite the unit replaced (the encoder's group norm before it), plus the activation. */
function reference(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, groups: number, v: Variant, res: tf.Tensor) {
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const grouped = tf.reshape(x, [n, h, w, groups, c / groups]);
  const { mean, variance } = tf.moments(grouped, [1, 2, 4], true);
  const normed = tf.reshape(tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, 1e-5))), [n, h, w, c]);
  let y = tf.add(tf.mul(normed, g), b);
  if (v.residual) y = tf.add(y, res);
  return v.relu ? tf.relu(y) : y;
}

/** Output and gradients (x, γ, β, residual) of Σ unit(x)·r on one backend. */
async function unitGrads(
  backend: string,
  shape: [number, number, number, number],
  groups: number,
  v: Variant,
  impl: 'unit' | 'reference',
): Promise<{ shapes: number[][]; data: Float32Array[] }> {
  await tf.setBackend(backend);
  const c = shape[3];
  const size = shape.reduce((a, b) => a * b);
  return tf.tidy(() => {
    // An offset mean and a spread that differs per channel, as conv outputs have.
    const x = tf.tensor(
      random(size, 21).map((u, i) => (2 + (i % c)) * u + 0.7),
      shape,
    );
    const g = tf.tensor1d(random(c, 22).map((u) => 1 + u / 2));
    const b = tf.tensor1d(random(c, 23));
    const res = tf.tensor(random(size, 25), shape);
    const r = tf.tensor(random(size, 24), shape);
    const unit = (xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor, ri: tf.Tensor) =>
      impl === 'unit'
        ? groupNormCore(xi as tf.Tensor4D, gi, bi, groups, {
            relu: v.relu,
            ...(v.residual ? { residual: ri } : {}),
          })
        : reference(xi, gi, bi, groups, v, ri);
    const loss = (...ins: tf.Tensor[]) => tf.sum(tf.mul(unit(ins[0]!, ins[1]!, ins[2]!, ins[3] ?? res), r));
    const grads = tf.grads(loss)(v.residual ? [x, g, b, res] : [x, g, b]);
    const out = [unit(x, g, b, res), ...grads];
    return { shapes: out.map((t) => t.shape), data: out.map((t) => t.dataSync() as Float32Array) };
  });
}

describe('group norm + residual + ReLU as one unit (hand-written gradient)', () => {
  const variants: Variant[] = [
    { relu: false, residual: false },
    { relu: true, residual: false },
    { relu: true, residual: true },
    { relu: false, residual: true },
  ];
  // With exactly two values per group x̂ = ±1 whatever x, so dx is 0 up to rounding (noise
  // of ~1e-7·r in every implementation, autodiff on wasm vs cpu included): that case asserts
  // |dx| is that small instead of a relative error against noise.
  const cases: [[number, number, number, number], number][] = [
    [[4, 5, 5, 6], 3], // two channels per group, odd map
    [[4, 8, 8, 16], 16], // one channel per group (the encoder's 16-channel layers)
    [[2, 6, 6, 64], 32], // the encoder's 64-channel layers
    [[3, 1, 1, 8], 8], // 1×1 map, one channel per group: every group one value, σ² = 0
    [[2, 1, 1, 12], 4], // 1×1 map, three channels per group
    [[2, 1, 1, 8], 4], // 1×1 map, two channels per group: dx ≡ 0
    [[1, 3, 2, 4], 1], // one group, one sample
  ];
  for (const [shape, groups] of cases) {
    for (const v of variants) {
      it(`equals autodiff of the composite on wasm and cpu: [${shape}] G=${groups} relu=${v.relu} residual=${v.residual}`, async () => {
        const before = tf.memory().numTensors;
        const wasm = await unitGrads('wasm', shape, groups, v, 'unit');
        const cpu = await unitGrads('cpu', shape, groups, v, 'unit');
        const ref = await unitGrads('cpu', shape, groups, v, 'reference');
        const refWasm = await unitGrads('wasm', shape, groups, v, 'reference');
        await tf.setBackend('wasm');
        expect(tf.memory().numTensors).toBe(before);
        expect(wasm.shapes).toEqual(ref.shapes);
        expect(cpu.shapes).toEqual(ref.shapes);
        const twoPerGroup = shape[1] * shape[2] * (shape[3] / groups) === 2;
        for (let i = 0; i < ref.data.length; i++) {
          if (i === 1 && twoPerGroup) {
            for (const d of [wasm, cpu, ref, refWasm])
              expect(Math.max(...d.data[1]!.map(Math.abs)), 'dx of two values per group').toBeLessThan(1e-4);
            continue;
          }
          expect(err(wasm.data[i]!, ref.data[i]!), `wasm output ${i}`).toBeLessThan(1e-4);
          expect(err(cpu.data[i]!, ref.data[i]!), `cpu output ${i}`).toBeLessThan(1e-4);
          expect(err(wasm.data[i]!, refWasm.data[i]!), `wasm vs wasm autodiff, output ${i}`).toBeLessThan(
            1e-4,
          );
        }
      });
    }
  }

  it('rejects channels that do not split into the groups', () => {
    const x = tf.zeros([1, 2, 2, 6]) as tf.Tensor4D;
    const g = tf.ones([6]);
    expect(() => groupNormCore(x, g, g, 4)).toThrow('group norm: 6 channels do not split into 4 groups');
    tf.dispose([x, g]);
  });
});
