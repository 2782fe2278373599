import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { conv2dUnit } from '@fedssl/shared/model/tf';
import { selectBackend } from './backend';
import { random, relErr } from './numeric-test-util';

beforeAll(async () => {
  const info = await selectBackend(pino({ level: 'silent' }), 'wasm');
  expect(info.name).toBe('wasm');
});

type Conv = (x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number) => tf.Tensor4D;

/** Gradients (x, w) of a small residual-like net built from `conv`: the unit's output feeds two consumers. */
function netGrads(conv: Conv, k: number, stride: number): Float32Array[] {
  const x = tf.tensor4d(random(2 * 9 * 8 * 3, 1), [2, 9, 8, 3]);
  const w = tf.tensor4d(random(k * k * 3 * 4, 2), [k, k, 3, 4]);
  const pad = Math.floor(k / 2);
  const f = (xi: tf.Tensor, wi: tf.Tensor) => {
    const y = conv(xi as tf.Tensor4D, wi as tf.Tensor4D, stride, pad);
    const z = conv(tf.relu(y) as tf.Tensor4D, tf.transpose(wi, [0, 1, 3, 2]) as tf.Tensor4D, 1, pad);
    return tf.add(tf.sum(tf.square(z)), tf.sum(tf.mul(y, y)));
  };
  const grads = tf.tidy(() => tf.grads(f)([x, w]));
  const out = grads.map((g) => g.dataSync() as Float32Array);
  tf.dispose([...grads, x, w]);
  return out;
}

describe('conv2dUnit (tf.conv2d whose gradient releases dy and its saved tensors)', () => {
  for (const backend of ['wasm', 'cpu']) {
    for (const [k, stride] of [
      [3, 1],
      [3, 2],
      [1, 2],
    ] as const) {
      it(`equals autodiff of tf.conv2d on ${backend}, ${k}×${k} stride ${stride}, without leaking`, async () => {
        await tf.setBackend(backend);
        const before = tf.memory().numTensors;
        const mine = netGrads(conv2dUnit, k, stride);
        expect(tf.memory().numTensors).toBe(before);
        const ref = netGrads((x, w, s, p) => tf.conv2d(x, w, s, p), k, stride);
        for (let i = 0; i < 2; i++) {
          expect(mine[i]!.length).toBe(ref[i]!.length);
          expect(relErr(mine[i]!, ref[i]!)).toBeLessThan(1e-5);
        }
        await tf.setBackend('wasm');
      });
    }
  }
});

describe('conv2dUnit with inputGradient: false (the stem: its input is the images)', () => {
  for (const backend of ['wasm', 'cpu']) {
    it(`gives autodiff's filter gradient on ${backend}, runs no input-gradient convolution, leaks nothing`, async () => {
      await tf.setBackend(backend);
      const x = tf.tensor4d(random(2 * 9 * 8 * 3, 1), [2, 9, 8, 3]);
      const w = tf.tensor4d(random(3 * 3 * 3 * 4, 2), [3, 3, 3, 4]);
      const r = tf.tensor4d(random(2 * 9 * 8 * 4, 3), [2, 9, 8, 4]);
      const loss = (conv: (wi: tf.Tensor4D) => tf.Tensor4D) => (wi: tf.Tensor) =>
        tf.sum(tf.mul(tf.relu(conv(wi as tf.Tensor4D)), r));
      const before = tf.memory().numTensors;
      let mine: Float32Array | undefined;
      const profile = await tf.profile(() => {
        const g = tf.grad(loss((wi) => conv2dUnit(x, wi, 1, 1, { inputGradient: false })))(w);
        mine = g.dataSync() as Float32Array;
        g.dispose();
      });
      expect(tf.memory().numTensors).toBe(before);
      expect(profile.kernelNames).toContain('Conv2DBackpropFilter');
      expect(profile.kernelNames).not.toContain('Conv2DBackpropInput');
      const refGrad = tf.grad(loss((wi) => tf.conv2d(x, wi, 1, 1)))(w);
      expect(relErr(mine!, refGrad.dataSync() as Float32Array)).toBeLessThan(1e-5);
      tf.dispose([x, w, r, refGrad]);
      await tf.setBackend('wasm');
    });
  }
});
