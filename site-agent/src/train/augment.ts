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
  const g1 = view(images, inputSize, rand, cfg, cfg.randomResizedCrop);
  const g2 = view(images, inputSize, rand, cfg, cfg.randomResizedCrop);
  const localSize = Math.max(8, Math.round(cfg.multiCrop.sizeFraction * inputSize));
  const localCrop = { enabled: true, scaleMin: cfg.multiCrop.scaleMin, scaleMax: cfg.multiCrop.scaleMax };
  const local: tf.Tensor4D[] = [];
  for (let i = 0; i < cfg.multiCrop.localViews; i++)
    local.push(view(images, localSize, rand, cfg, localCrop));
  return { global: [g1, g2], local };
}
