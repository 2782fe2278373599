import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { augmentationConfigSchema, mulberry32 } from '@fedssl/shared/model';
import { createHash } from 'node:crypto';
import {
  colorJitter,
  gaussianBlur,
  makeViews,
  mixup,
  mixupLambda,
  randomBoxes,
  randomGrayscale,
} from './augment';

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

/** A horizontal ramp: pixel value = column / (w − 1). */
function ramp(b: number, h: number, w: number): tf.Tensor4D {
  const data = new Float32Array(b * h * w);
  for (let i = 0; i < data.length; i++) data[i] = (i % w) / (w - 1);
  return tf.tensor4d(data, [b, h, w, 1]);
}

describe('augment', () => {
  it('makes 2 global and k local views of the right sizes, deterministic per seed', () => {
    const cfg = augmentationConfigSchema.parse({});
    const images = ramp(4, 40, 40);
    const a = makeViews(images, 32, cfg, mulberry32(1));
    const b = makeViews(images, 32, cfg, mulberry32(1));
    const c = makeViews(images, 32, cfg, mulberry32(2));
    expect(a.global[0].shape).toEqual([4, 32, 32, 1]);
    expect(a.global[1].shape).toEqual([4, 32, 32, 1]);
    expect(a.local).toHaveLength(2);
    expect(a.local[0]!.shape).toEqual([4, 16, 16, 1]);
    expect(Array.from(a.global[0].dataSync())).toEqual(Array.from(b.global[0].dataSync()));
    expect(Array.from(a.global[0].dataSync())).not.toEqual(Array.from(c.global[0].dataSync()));
    tf.dispose([images, ...a.global, ...a.local, ...b.global, ...b.local, ...c.global, ...c.local]);
  });

  it('flips by swapping box x coordinates', () => {
    const boxes = randomBoxes(
      50,
      mulberry32(3),
      { enabled: true, scaleMin: 0.3, scaleMax: 1 },
      { enabled: true, probability: 1 },
    );
    for (let i = 0; i < 50; i++) expect(boxes[i * 4 + 1]!).toBeGreaterThan(boxes[i * 4 + 3]!);
    // With crop disabled and flip forced, the view of a ramp is the reversed ramp.
    const cfg = augmentationConfigSchema.parse({
      randomResizedCrop: { enabled: false },
      horizontalFlip: { probability: 1 },
      multiCrop: { localViews: 0 },
    });
    const img = ramp(1, 8, 8);
    const v = makeViews(img, 8, cfg, mulberry32(4));
    const row = Array.from(v.global[0].dataSync().slice(0, 8));
    expect(row[0]).toBeCloseTo(1, 5);
    expect(row[7]).toBeCloseTo(0, 5);
    tf.dispose([img, ...v.global]);
  });

  it('keeps crops inside the image with the requested area range', () => {
    const boxes = randomBoxes(
      200,
      mulberry32(5),
      { enabled: true, scaleMin: 0.3, scaleMax: 0.6 },
      { enabled: false, probability: 0 },
    );
    for (let i = 0; i < 200; i++) {
      const [y1, x1, y2, x2] = Array.from(boxes.slice(i * 4, i * 4 + 4));
      expect(Math.min(y1!, x1!)).toBeGreaterThanOrEqual(0);
      expect(Math.max(y2!, x2!)).toBeLessThanOrEqual(1 + 1e-6);
      const area = (y2! - y1!) * (x2! - x1!);
      expect(area).toBeLessThanOrEqual(0.6 + 1e-6);
      expect(area).toBeGreaterThan(0.2); // clipping to the image may shrink it a little
    }
  });

  it('blurs (per image) while preserving the mean, and jitter stays in [0, 1]', () => {
    const data = new Float32Array(2 * 16 * 16);
    for (let i = 0; i < data.length; i++) data[i] = (i + Math.floor(i / 16)) % 2; // checkerboard
    const img = tf.tensor4d(data, [2, 16, 16, 1]);
    const blurred = gaussianBlur(img, () => 0.5, { enabled: true, probability: 1, sigmaMax: 2 }); // σ = 1.05 for both images
    const centre = tf.slice(blurred, [0, 4, 4, 0], [2, 8, 8, 1]);
    // Blurring a checkerboard lowers each image's variance (0.25 before) away from the borders.
    const variance = tf.moments(centre, [1, 2, 3]).variance.dataSync();
    for (const v of variance) expect(v).toBeLessThan(0.24);
    expect(tf.mean(centre).dataSync()[0]).toBeCloseTo(0.5, 2);
    const unchanged = gaussianBlur(img, mulberry32(6), { enabled: true, probability: 0, sigmaMax: 2 });
    expect(Array.from(unchanged.dataSync())).toEqual(Array.from(data));
    const jit = colorJitter(img, mulberry32(7), {
      enabled: true,
      probability: 1,
      brightness: 0.9,
      contrast: 0.9,
    });
    const jv = Array.from(jit.dataSync());
    expect(Math.min(...jv)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...jv)).toBeLessThanOrEqual(1);
    expect(jv).not.toEqual(Array.from(data));
    tf.dispose([img, blurred, centre, unchanged, jit]);
  });

  it('leaves the default recipe unchanged: grayscale and mixup off, the same views as before they existed', () => {
    const cfg = augmentationConfigSchema.parse({});
    expect([cfg.grayscale, cfg.mixup]).toEqual([
      { enabled: false, probability: 0.2 },
      { enabled: false, alpha: 0.2 },
    ]);
    const data = new Float32Array(3 * 24 * 24);
    for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 1000) / 999;
    const images = tf.tensor4d(data, [3, 24, 24, 1]);
    const v = makeViews(images, 16, cfg, mulberry32(11));
    const h = createHash('sha256');
    for (const t of [...v.global, ...v.local]) h.update(Buffer.from(t.dataSync().buffer));
    // Recorded with the code before grayscale and mixup were added.
    expect(h.digest('hex')).toBe('4330f721fbd14c2473e1626e93f6df188d56994e35e98544c81a51e1e07652b0');
    tf.dispose([images, ...v.global, ...v.local]);
  });

  it('grayscale: the identity on 1-channel images; luma on the selected 3-channel ones', () => {
    const one = ramp(2, 4, 4);
    const same = randomGrayscale(one, () => 0, { enabled: true, probability: 1 });
    expect(Array.from(same.dataSync())).toEqual(Array.from(one.dataSync()));
    // Image 0 selected (rand 0 < 0.5), image 1 not (rand 0.9).
    const rgb = tf.tensor4d([1, 0, 0, 0, 1, 0, 0, 0, 1, 0.2, 0.4, 0.6], [2, 1, 2, 3]);
    const draws = [0, 0.9];
    const g = randomGrayscale(rgb, () => draws.shift()!, { enabled: true, probability: 0.5 });
    const out = Array.from(g.dataSync());
    expect(out.slice(0, 3).every((x) => Math.abs(x - 0.299) < 1e-6)).toBe(true);
    expect(out.slice(3, 6).every((x) => Math.abs(x - 0.587) < 1e-6)).toBe(true);
    expect(out.slice(6, 12)).toEqual(Array.from(rgb.dataSync()).slice(6, 12));
    expect(draws).toEqual([]); // one draw per image
    tf.dispose([one, same, rgb, g]);
  });

  it('mixup: λ·xᵢ + (1 − λ)·x_π(i) with λ ≥ 0.5 and π a permutation, seeded, values stay in [0, 1]', () => {
    const b = 6;
    const data = new Float32Array(b * 5 * 5);
    for (let i = 0; i < data.length; i++) data[i] = ((i * 37) % 101) / 100;
    const images = tf.tensor4d(data, [b, 5, 5, 1]);
    const before = tf.memory().numTensors;
    const a = mixup(images, mulberry32(21), { enabled: true, alpha: 0.4 });
    const again = mixup(images, mulberry32(21), { enabled: true, alpha: 0.4 });
    const other = mixup(images, mulberry32(22), { enabled: true, alpha: 0.4 });
    expect(tf.memory().numTensors).toBe(before + 3);
    expect(a.images.shape).toEqual([b, 5, 5, 1]);
    expect(a.lambda).toBeGreaterThanOrEqual(0.5);
    expect(a.lambda).toBeLessThanOrEqual(1);
    expect([...a.permutation].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Array.from(again.images.dataSync())).toEqual(Array.from(a.images.dataSync()));
    expect([again.lambda, again.permutation]).toEqual([a.lambda, a.permutation]);
    expect(Array.from(other.images.dataSync())).not.toEqual(Array.from(a.images.dataSync()));
    // Against an independent computation on the arrays.
    const got = a.images.dataSync();
    const per = 25;
    for (let n = 0; n < b; n++)
      for (let k = 0; k < per; k++) {
        const want = a.lambda * data[n * per + k]! + (1 - a.lambda) * data[a.permutation[n]! * per + k]!;
        expect(got[n * per + k]).toBeCloseTo(want, 6);
      }
    expect(Math.min(...got)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...got)).toBeLessThanOrEqual(1);
    tf.dispose([images, a.images, again.images, other.images]);
  });

  it('mixup λ follows Beta(α, α) folded to [0.5, 1]: small α stays near 1, large α near 0.5', () => {
    const mean = (alpha: number) => {
      const rand = mulberry32(5);
      let s = 0;
      for (let i = 0; i < 4000; i++) s += mixupLambda(alpha, rand);
      return s / 4000;
    };
    // E[max(L, 1 − L)] for L ~ Beta(α, α): ≈ 0.89 at α = 0.2, 0.75 at α = 1 (uniform), → 0.5 as α grows.
    expect(mean(0.2)).toBeGreaterThan(0.85);
    expect(mean(0.2)).toBeLessThan(0.93);
    expect(mean(1)).toBeCloseTo(0.75, 1);
    expect(mean(10)).toBeLessThan(0.6);
  });

  it('makeViews with mixup and grayscale on: same shapes, reproducible, different from without, no leaks', () => {
    const cfg = augmentationConfigSchema.parse({
      mixup: { enabled: true, alpha: 1 },
      grayscale: { enabled: true },
    });
    const images = ramp(4, 20, 20);
    const before = tf.memory().numTensors;
    const a = makeViews(images, 16, cfg, mulberry32(8));
    const b = makeViews(images, 16, cfg, mulberry32(8));
    const plain = makeViews(images, 16, augmentationConfigSchema.parse({}), mulberry32(8));
    expect(tf.memory().numTensors).toBe(before + 3 * 4);
    expect(a.global.map((t) => t.shape)).toEqual([
      [4, 16, 16, 1],
      [4, 16, 16, 1],
    ]);
    expect(a.local.map((t) => t.shape)).toEqual([
      [4, 8, 8, 1],
      [4, 8, 8, 1],
    ]);
    expect(Array.from(a.global[1].dataSync())).toEqual(Array.from(b.global[1].dataSync()));
    expect(Array.from(a.global[0].dataSync())).not.toEqual(Array.from(plain.global[0].dataSync()));
    const values = Array.from(a.global[0].dataSync());
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThanOrEqual(1 + 1e-6);
    tf.dispose([images, ...a.global, ...a.local, ...b.global, ...b.local, ...plain.global, ...plain.local]);
  });
});
