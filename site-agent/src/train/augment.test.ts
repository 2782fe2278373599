import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { augmentationConfigSchema, mulberry32 } from '@fedssl/shared/model';
import { colorJitter, gaussianBlur, makeViews, randomBoxes } from './augment';

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
});
