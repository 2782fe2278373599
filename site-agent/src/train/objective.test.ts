import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { byolPairLoss } from './objective';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('byolPairLoss', () => {
  it('is 2 − 2·cos(p, z), averaged over the batch', () => {
    const p = tf.tensor2d([
      [1, 0],
      [3, 4],
    ]);
    const z = tf.tensor2d([
      [0, 2],
      [6, 8],
    ]);
    // row 1: orthogonal → 2; row 2: parallel → 0
    expect(byolPairLoss(p, z).dataSync()[0]).toBeCloseTo(1, 6);
  });

  it('has a finite gradient when a prediction row is all zeros (constant features)', () => {
    const z = tf.tensor2d([
      [1, 2],
      [3, 4],
    ]);
    const grad = tf.grad((p: tf.Tensor) => byolPairLoss(p as tf.Tensor2D, z))(
      tf.tensor2d([
        [0, 0],
        [1, 1],
      ]),
    );
    for (const g of grad.dataSync()) expect(Number.isFinite(g)).toBe(true);
  });
});
