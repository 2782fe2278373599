import * as tf from '@tensorflow/tfjs-core';
import type { AugmentationConfig } from '@fedssl/shared/model';

/** The views of one batch: two global views and `multiCrop.localViews` smaller ones. */
export interface ViewBatch {
  /** Two global views `[B, inputSize, inputSize, 1]`. */
  global: [tf.Tensor4D, tf.Tensor4D];
  /** Local (multi-crop) views `[B, s, s, 1]` with `s = round(sizeFraction·inputSize)`. */
  local: tf.Tensor4D[];
}

/** Aspect-ratio range of random resized crops (torchvision's default 3/4 … 4/3). */
const LOG_RATIO_MIN = Math.log(3 / 4);
const LOG_RATIO_MAX = Math.log(4 / 3);

/**
 * One box per image for `tf.image.cropAndResize`, as `[y1, x1, y2, x2]` in normalized
 * coordinates. A flipped view swaps x1 and x2, which cropAndResize samples right-to-left:
 * the horizontal flip costs nothing.
 */
export function randomBoxes(
  count: number,
  rand: () => number,
  crop: { enabled: boolean; scaleMin: number; scaleMax: number },
  flip: { enabled: boolean; probability: number },
): Float32Array {
  const boxes = new Float32Array(count * 4);
  for (let i = 0; i < count; i++) {
    let w = 1;
    let h = 1;
    if (crop.enabled) {
      const lo = Math.min(crop.scaleMin, crop.scaleMax);
      const hi = Math.max(crop.scaleMin, crop.scaleMax);
      const area = lo + (hi - lo) * rand();
      const ratio = Math.exp(LOG_RATIO_MIN + (LOG_RATIO_MAX - LOG_RATIO_MIN) * rand());
      w = Math.min(1, Math.sqrt(area * ratio));
      h = Math.min(1, Math.sqrt(area / ratio));
    }
    const y1 = (1 - h) * rand();
    let x1 = (1 - w) * rand();
    let x2 = x1 + w;
    if (flip.enabled && rand() < flip.probability) [x1, x2] = [x2, x1];
    boxes.set([y1, x1, y1 + h, x2], i * 4);
  }
  return boxes;
}

/**
 * Gaussian blur with a per-image sigma in one depthwise convolution: the batch is moved
 * into channels so every image gets its own kernel; unselected images get a delta kernel.
 */
export function gaussianBlur(
  images: tf.Tensor4D,
  rand: () => number,
  cfg: AugmentationConfig['gaussianBlur'],
): tf.Tensor4D {
  const [b, hgt, wid] = images.shape;
  const radius = Math.max(1, Math.ceil(2 * cfg.sigmaMax));
  const k = 2 * radius + 1;
  const kernel = new Float32Array(k * k * b); // layout [k, k, b, 1]
  for (let n = 0; n < b; n++) {
    const apply = rand() < cfg.probability;
    const sigma = 0.1 + (cfg.sigmaMax - 0.1) * rand();
    const oneD = new Float64Array(k);
    if (apply) {
      let sum = 0;
      for (let i = 0; i < k; i++) sum += oneD[i] = Math.exp(-((i - radius) ** 2) / (2 * sigma * sigma));
      for (let i = 0; i < k; i++) oneD[i]! /= sum;
    } else {
      oneD[radius] = 1;
    }
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) kernel[(i * k + j) * b + n] = oneD[i]! * oneD[j]!;
  }
  return tf.tidy(() => {
    const chans = tf.reshape(tf.transpose(images, [3, 1, 2, 0]), [1, hgt, wid, b]) as tf.Tensor4D;
    const filter = tf.tensor4d(kernel, [k, k, b, 1]);
    const blurred = tf.depthwiseConv2d(chans, filter, 1, 'same');
    return tf.transpose(blurred, [3, 1, 2, 0]) as tf.Tensor4D;
  });
}

/** Per-image brightness (multiplicative) and contrast (around the image mean) jitter, clipped to [0, 1]. */
export function colorJitter(
  images: tf.Tensor4D,
  rand: () => number,
  cfg: AugmentationConfig['colorJitter'],
): tf.Tensor4D {
  const b = images.shape[0];
  const bright = new Float32Array(b).fill(1);
  const contrast = new Float32Array(b).fill(1);
  for (let n = 0; n < b; n++) {
    if (rand() < cfg.probability) {
      bright[n] = 1 + cfg.brightness * (2 * rand() - 1);
      contrast[n] = 1 + cfg.contrast * (2 * rand() - 1);
    }
  }
  return tf.tidy(() => {
    const x = tf.mul(images, tf.tensor4d(bright, [b, 1, 1, 1]));
    const mean = tf.mean(x, [1, 2, 3], true);
    return tf.clipByValue(
      tf.add(tf.mul(tf.sub(x, mean), tf.tensor4d(contrast, [b, 1, 1, 1])), mean),
      0,
      1,
    ) as tf.Tensor4D;
  });
}

/** ITU-R BT.601 luma weights (torchvision's `rgb_to_grayscale`). */
const LUMA = [0.299, 0.587, 0.114] as const;

/**
 * Random grayscale per image with probability `cfg.probability`: a selected 3-channel image
 * becomes its luma `0.299 R + 0.587 G + 0.114 B` on all three channels. fedssl's images are
 * already 1-channel (sources convert to gray when they read), and there the operation is the
 * identity; it is defined for RGB-derived 3-channel inputs. One `rand()` per image either way,
 * so the random stream does not depend on the channel count.
 */
export function randomGrayscale(
  images: tf.Tensor4D,
  rand: () => number,
  cfg: AugmentationConfig['grayscale'],
): tf.Tensor4D {
  const [b, , , c] = images.shape;
  const pick = new Float32Array(b);
  for (let n = 0; n < b; n++) pick[n] = rand() < cfg.probability ? 1 : 0;
  if (c !== 3) return tf.clone(images);
  return tf.tidy(() => {
    const luma = tf.sum(tf.mul(images, tf.tensor4d([...LUMA], [1, 1, 1, 3])), 3, true);
    const gray = tf.tile(luma, [1, 1, 1, 3]);
    const m = tf.tensor4d(pick, [b, 1, 1, 1]);
    return tf.add(tf.mul(gray, m), tf.mul(images, tf.sub(1, m))) as tf.Tensor4D;
  });
}

/** A standard normal from two uniforms (Box–Muller). */
function normal(rand: () => number): number {
  const u = Math.max(rand(), Number.MIN_VALUE);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** Gamma(shape, 1) by Marsaglia–Tsang, with the `U^(1/shape)` boost below shape 1. */
function gamma(shape: number, rand: () => number): number {
  if (shape < 1) return gamma(shape + 1, rand) * Math.pow(Math.max(rand(), Number.MIN_VALUE), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = normal(rand);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rand();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/**
 * Beta(α, α) from two gammas, folded to `max(λ, 1 − λ)` ∈ [0.5, 1].
 * @example mixupLambda(0.2, mulberry32(1)) // ≥ 0.5
 */
export function mixupLambda(alpha: number, rand: () => number): number {
  const a = gamma(alpha, rand);
  const b = gamma(alpha, rand);
  const lambda = a + b > 0 ? a / (a + b) : 1;
  return Math.max(lambda, 1 - lambda);
}

/**
 * Batch-level mixup of the views' source images, on the current backend. With one
 * `λ = max(L, 1 − L)`, `L ~ Beta(α, α)`, and one random permutation π of the batch (both from
 * `rand`), image i becomes `λ·xᵢ + (1 − λ)·x_π(i)`; every view of image i (both global views and
 * the local ones) is then cropped from that mixed image, so BYOL still compares two views of
 * one input. Folding λ to ≥ 0.5 keeps xᵢ dominant, so its metadata label (its patient) stays
 * the right target for the metadata head. A convex combination keeps values in [0, 1].
 */
export function mixup(
  images: tf.Tensor4D,
  rand: () => number,
  cfg: AugmentationConfig['mixup'],
): { images: tf.Tensor4D; lambda: number; permutation: number[] } {
  const b = images.shape[0];
  const lambda = mixupLambda(cfg.alpha, rand);
  const permutation = Array.from({ length: b }, (_, i) => i);
  for (let i = b - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [permutation[i], permutation[j]] = [permutation[j]!, permutation[i]!];
  }
  const mixed = tf.tidy(
    () =>
      tf.add(
        tf.mul(images, lambda),
        tf.mul(tf.gather(images, tf.tensor1d(permutation, 'int32')), 1 - lambda),
      ) as tf.Tensor4D,
  );
  return { images: mixed, lambda, permutation };
}

function view(
  images: tf.Tensor4D,
  size: number,
  rand: () => number,
  cfg: AugmentationConfig,
  crop: { enabled: boolean; scaleMin: number; scaleMax: number },
): tf.Tensor4D {
  const b = images.shape[0];
  const boxes = randomBoxes(b, rand, crop, cfg.horizontalFlip);
  return tf.tidy(() => {
    let v = tf.image.cropAndResize(
      images,
      tf.tensor2d(boxes, [b, 4]),
      tf.tensor1d(
        Array.from({ length: b }, (_, i) => i),
        'int32',
      ),
      [size, size],
      'bilinear',
    );
    if (cfg.gaussianBlur.enabled) v = gaussianBlur(v, rand, cfg.gaussianBlur);
    if (cfg.colorJitter.enabled) v = colorJitter(v, rand, cfg.colorJitter);
    if (cfg.grayscale.enabled) v = randomGrayscale(v, rand, cfg.grayscale);
    return v;
  });
}

/**
 * Make the BYOL views of a batch `[B, H, W, 1]` on the current backend, all randomness
 * from `rand` (seeded by the caller) so a round is reproducible. The caller disposes
 * the returned tensors (or calls this inside `tf.tidy`).
 */
export function makeViews(
  images: tf.Tensor4D,
  inputSize: number,
  cfg: AugmentationConfig,
  rand: () => number,
): ViewBatch {
  // Disabled options draw nothing from `rand`, so the default recipe's views are unchanged.
  const mixed = cfg.mixup.enabled ? mixup(images, rand, cfg.mixup).images : undefined;
  const src = mixed ?? images;
  const g1 = view(src, inputSize, rand, cfg, cfg.randomResizedCrop);
  const g2 = view(src, inputSize, rand, cfg, cfg.randomResizedCrop);
  const localSize = Math.max(8, Math.round(cfg.multiCrop.sizeFraction * inputSize));
  const localCrop = { enabled: true, scaleMin: cfg.multiCrop.scaleMin, scaleMax: cfg.multiCrop.scaleMax };
  const local: tf.Tensor4D[] = [];
  for (let i = 0; i < cfg.multiCrop.localViews; i++) local.push(view(src, localSize, rand, cfg, localCrop));
  mixed?.dispose();
  return { global: [g1, g2], local };
}
