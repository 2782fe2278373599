import * as tf from '@tensorflow/tfjs-core';
import { encoderPlan, groupNormGroups, type BlockPlan } from '../architecture';
import type { ModelConfig } from '../config';
import {
  applyActivation,
  batchNormCore,
  BN_EPS,
  type MomentsReducer,
  type NormActivation,
} from './batch-norm';
import { conv2dUnit } from './conv';
import { groupNormCore } from './group-norm';
import { param, type ParamMap } from './params';

/** PyTorch's default batch-norm momentum (weight of the new batch statistic). */
export const DEFAULT_BN_MOMENTUM = 0.1;

/** Options of the forward functions. */
export interface ForwardOptions {
  /** Training mode: normalize with batch moments (and report new running stats). */
  training: boolean;
  /**
   * Training mode only: receives the updated running mean/var of every encoder batch
   * norm, keyed by parameter name. They are `tf.keep`-ed so they survive the gradient
   * tape's tidy; the caller assigns them to the running-stat variables after the
   * optimizer step and disposes them. Nothing is mutated inside the forward pass.
   */
  statsOut?: Map<string, tf.Tensor>;
  /** Running-stat momentum (PyTorch convention), default 0.1. */
  momentum?: number;
  /** Synchronizes every batch norm's moments across data-parallel workers (training only). */
  reducer?: MomentsReducer;
  /**
   * `false`: no gradient is computed for the input images (the stem skips its
   * input-gradient convolution); for training, where only parameters get gradients.
   * Default true.
   */
  inputGradient?: boolean;
}

/** Batch norm with batch moments in training; with running statistics in inference. */
function batchNorm(
  x: tf.Tensor,
  params: ParamMap,
  name: string,
  opts: ForwardOptions,
  hasRunning: boolean,
  act: NormActivation = {},
): tf.Tensor {
  const gamma = param(params, `${name}.weight`);
  const beta = param(params, `${name}.bias`);
  if (!opts.training && hasRunning) {
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(param(params, `${name}.running_var`), BN_EPS)));
    const shift = tf.sub(beta, tf.mul(param(params, `${name}.running_mean`), scale));
    return applyActivation(tf.add(tf.mul(x, scale), shift), act);
  }
  const statsOut = opts.training && hasRunning ? opts.statsOut : undefined;
  return batchNormCore(
    x,
    gamma,
    beta,
    statsOut &&
      ((mean, variance, n) => {
        const m = opts.momentum ?? DEFAULT_BN_MOMENTUM;
        const unbiased = n > 1 ? n / (n - 1) : 1;
        const rm = param(params, `${name}.running_mean`);
        const rv = param(params, `${name}.running_var`);
        statsOut.set(`${name}.running_mean`, tf.keep(tf.add(tf.mul(rm, 1 - m), tf.mul(mean, m))));
        statsOut.set(
          `${name}.running_var`,
          tf.keep(tf.add(tf.mul(rv, 1 - m), tf.mul(variance, m * unbiased))),
        );
      }),
    opts.reducer,
    act,
  );
}

/** Normalization, then the optional residual add and ReLU (one unit for batch norm). */
function norm2d(
  x: tf.Tensor4D,
  params: ParamMap,
  name: string,
  kind: ModelConfig['norm'],
  opts: ForwardOptions,
  act: NormActivation = {},
): tf.Tensor4D {
  return (
    kind === 'group'
      ? groupNormCore(
          x,
          param(params, `${name}.weight`),
          param(params, `${name}.bias`),
          groupNormGroups(x.shape[3]),
          act,
        )
      : batchNorm(x, params, name, opts, true, act)
  ) as tf.Tensor4D;
}

/** Convolution with PyTorch-style symmetric padding floor(k/2), so weights map 1:1 onto torchvision. */
function conv(
  x: tf.Tensor4D,
  params: ParamMap,
  name: string,
  stride: number,
  inputGradient = true,
): tf.Tensor4D {
  const w = param(params, `${name}.weight`) as tf.Tensor4D;
  const k = w.shape[0];
  return conv2dUnit(x, w, stride, Math.floor(k / 2), { inputGradient });
}

function block(
  x: tf.Tensor4D,
  params: ParamMap,
  b: BlockPlan,
  kind: ModelConfig['norm'],
  opts: ForwardOptions,
): tf.Tensor4D {
  const p = b.prefix;
  const relu = { relu: true };
  let out: tf.Tensor4D;
  if (b.kind === 'basic') {
    out = norm2d(conv(x, params, `${p}.conv1`, b.stride), params, `${p}.bn1`, kind, opts, relu);
  } else {
    out = norm2d(conv(x, params, `${p}.conv1`, 1), params, `${p}.bn1`, kind, opts, relu);
    out = norm2d(conv(out, params, `${p}.conv2`, b.stride), params, `${p}.bn2`, kind, opts, relu);
  }
  const shortcut = b.downsample
    ? norm2d(conv(x, params, `${p}.downsample.0`, b.stride), params, `${p}.downsample.1`, kind, opts)
    : x;
  // The last norm, the residual add and the ReLU are one unit.
  const last = b.kind === 'basic' ? 'conv2' : 'conv3';
  const lastNorm = b.kind === 'basic' ? 'bn2' : 'bn3';
  return norm2d(conv(out, params, `${p}.${last}`, 1), params, `${p}.${lastNorm}`, kind, opts, {
    residual: shortcut,
    relu: true,
  });
}

/**
 * The ResNet encoder: `x` is `[N, H, W, 1]` in [0, 1]-ish range; returns the globally
 * average-pooled features `[N, featureDim]`. Works on any square-ish size (local
 * multi-crop views are smaller than `inputSize`).
 *
 * The ImageNet stem's 3×3/2 max-pool is kept (wasm has MaxPoolGrad); PyTorch padding 1.
 */
export function encoderForward(
  config: ModelConfig,
  params: ParamMap,
  x: tf.Tensor4D,
  opts: ForwardOptions,
): tf.Tensor2D {
  const plan = encoderPlan(config);
  const stem = conv(x, params, 'encoder.conv1', plan.stem.stride, opts.inputGradient !== false);
  let h = norm2d(stem, params, 'encoder.bn1', plan.norm, opts, { relu: true });
  if (plan.stem.pool) h = tf.maxPool(h, 3, 2, 1);
  for (const b of plan.blocks) h = block(h, params, b, plan.norm, opts);
  return tf.mean(h, [1, 2]) as tf.Tensor2D;
}

/**
 * A 2-layer MLP head named like `nn.Sequential(Linear, BatchNorm1d, ReLU, Linear)`:
 * `prefix` is `projector`, `predictor` or `metadata_head`. Its norm always uses batch
 * statistics (these heads only run in training; see describeModel).
 */
export function mlpForward(
  prefix: string,
  params: ParamMap,
  x: tf.Tensor2D,
  opts: ForwardOptions,
): tf.Tensor2D {
  const h0 = tf.add(
    tf.matMul(x, param(params, `${prefix}.0.weight`) as tf.Tensor2D),
    param(params, `${prefix}.0.bias`),
  );
  const h1 = batchNorm(h0, params, `${prefix}.1`, { ...opts, training: true }, false, { relu: true });
  return tf.add(
    tf.matMul(h1 as tf.Tensor2D, param(params, `${prefix}.3.weight`) as tf.Tensor2D),
    param(params, `${prefix}.3.bias`),
  ) as tf.Tensor2D;
}
