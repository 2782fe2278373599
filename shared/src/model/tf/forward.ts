import * as tf from '@tensorflow/tfjs-core';
import { encoderPlan, groupNormGroups, type BlockPlan } from '../architecture';
import type { ModelConfig } from '../config';
import { param, type ParamMap } from './params';

const EPS = 1e-5;
/** PyTorch's default batch-norm momentum (weight of the new batch statistic). */
export const DEFAULT_BN_MOMENTUM = 0.1;

/**
 * Combines batch-norm moments across data-parallel workers, so that every worker
 * normalizes with the statistics of the GLOBAL batch exactly as one worker would. Each
 * method is called by every worker in the same order (the model code is the same) and
 * returns the same values on all of them. Absent: the batch is all on this thread.
 */
export interface MomentsReducer {
  /**
   * Forward: this worker's row count, per-channel mean and Σ(x − mean)² in; the global
   * batch's count, mean and (biased) variance out.
   */
  moments(
    count: number,
    mean: tf.Tensor,
    m2: tf.Tensor,
  ): { count: number; mean: tf.Tensor; variance: tf.Tensor };
  /** Backward: per-channel Σdy and Σdy·x̂ of this worker in, summed over all workers out. */
  sums(dBeta: tf.Tensor, dGamma: tf.Tensor): [tf.Tensor, tf.Tensor];
}

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
}

/**
 * Batch norm from batch moments, y = (x − μ)·γ/√(σ² + ε) + β over all axes but the
 * last, with a hand-written gradient. Autodiff through `tf.moments` and a scale/shift
 * keeps a dozen full-size intermediates per norm (mean's gradient even tiles a tensor of
 * ones); this keeps x, μ and 1/√(σ² + ε) and needs five full-size passes backwards:
 *   x̂ = (x − μ)·r,  dβ = Σ dy,  dγ = Σ dy·x̂,  dx = γr·(dy − (x̂·dγ + dβ)/n).
 * Same maths as before (checked against autodiff in the tests), fewer passes and tensors.
 *
 * With a `reducer` (data-parallel workers) μ, σ² and the two backward sums are those of
 * the global batch; dγ and dβ stay this worker's share (the caller sums gradients), and
 * `n` is the global row count.
 */
export function batchNormCore(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  onMoments?: (mean: tf.Tensor, variance: tf.Tensor, count: number) => void,
  reducer?: MomentsReducer,
): tf.Tensor {
  const axes = x.shape.slice(0, -1).map((_, i) => i);
  const localN = x.size / (x.shape[x.shape.length - 1] ?? 1);
  let n = localN;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xt, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [mean, variance] = tf.tidy(() => {
      const m = tf.mean(xt, axes);
      if (!reducer) return [m, tf.mean(tf.square(tf.sub(xt, m)), axes)];
      // Local mean and Σ(x − m)² combine stably across workers (Chan et al.).
      const global = reducer.moments(localN, m, tf.sum(tf.square(tf.sub(xt, m)), axes));
      n = global.count;
      return [global.mean, global.variance];
    });
    onMoments?.(mean, variance, n);
    const rstd = tf.rsqrt(tf.add(variance, EPS));
    save([xt, mean, rstd, g]);
    // x·s + t with s = γr, t = β − μs: two full-size passes.
    const value = tf.tidy(() => {
      const scale = tf.mul(g, rstd);
      return tf.add(tf.mul(xt, scale), tf.sub(b, tf.mul(mean, scale)));
    });
    return {
      value,
      // In its own tidy: the engine runs a custom gradient outside any per-node scope, so
      // its full-size intermediates would otherwise live until the whole backward ends.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [sx, sm, sr, sg] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
          const xhat = tf.mul(tf.sub(sx, sm), sr);
          const dBeta = tf.sum(dy, axes);
          const dGamma = tf.sum(tf.mul(dy, xhat), axes);
          const [sumDy, sumDyXhat] = reducer ? reducer.sums(dBeta, dGamma) : [dBeta, dGamma];
          const k = tf.mul(sg, sr);
          const corr = tf.add(tf.mul(xhat, tf.div(sumDyXhat, n)), tf.div(sumDy, n));
          return [tf.mul(tf.sub(dy, corr), k), dGamma, dBeta];
        }),
    };
  });
  return f(x, gamma, beta);
}

/** Batch norm with batch moments in training; with running statistics in inference. */
function batchNorm(
  x: tf.Tensor,
  params: ParamMap,
  name: string,
  opts: ForwardOptions,
  hasRunning: boolean,
): tf.Tensor {
  const gamma = param(params, `${name}.weight`);
  const beta = param(params, `${name}.bias`);
  if (!opts.training && hasRunning) {
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(param(params, `${name}.running_var`), EPS)));
    const shift = tf.sub(beta, tf.mul(param(params, `${name}.running_mean`), scale));
    return tf.add(tf.mul(x, scale), shift);
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
  );
}

/** Group norm over NHWC (no running state; identical in training and inference). */
function groupNorm(x: tf.Tensor4D, params: ParamMap, name: string): tf.Tensor {
  const [n, h, w, c] = x.shape;
  const g = groupNormGroups(c);
  const grouped = tf.reshape(x, [n, h, w, g, c / g]);
  const { mean, variance } = tf.moments(grouped, [1, 2, 4], true);
  const normed = tf.reshape(tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, EPS))), [n, h, w, c]);
  return tf.add(tf.mul(normed, param(params, `${name}.weight`)), param(params, `${name}.bias`));
}

function norm2d(
  x: tf.Tensor4D,
  params: ParamMap,
  name: string,
  kind: ModelConfig['norm'],
  opts: ForwardOptions,
): tf.Tensor4D {
  return (
    kind === 'group' ? groupNorm(x, params, name) : batchNorm(x, params, name, opts, true)
  ) as tf.Tensor4D;
}

/** Convolution with PyTorch-style symmetric padding floor(k/2), so weights map 1:1 onto torchvision. */
function conv(x: tf.Tensor4D, params: ParamMap, name: string, stride: number): tf.Tensor4D {
  const w = param(params, `${name}.weight`) as tf.Tensor4D;
  const k = w.shape[0];
  return tf.conv2d(x, w, stride, Math.floor(k / 2));
}

function block(
  x: tf.Tensor4D,
  params: ParamMap,
  b: BlockPlan,
  kind: ModelConfig['norm'],
  opts: ForwardOptions,
): tf.Tensor4D {
  const p = b.prefix;
  let out: tf.Tensor4D;
  if (b.kind === 'basic') {
    out = tf.relu(norm2d(conv(x, params, `${p}.conv1`, b.stride), params, `${p}.bn1`, kind, opts));
    out = norm2d(conv(out, params, `${p}.conv2`, 1), params, `${p}.bn2`, kind, opts);
  } else {
    out = tf.relu(norm2d(conv(x, params, `${p}.conv1`, 1), params, `${p}.bn1`, kind, opts));
    out = tf.relu(norm2d(conv(out, params, `${p}.conv2`, b.stride), params, `${p}.bn2`, kind, opts));
    out = norm2d(conv(out, params, `${p}.conv3`, 1), params, `${p}.bn3`, kind, opts);
  }
  const shortcut = b.downsample
    ? norm2d(conv(x, params, `${p}.downsample.0`, b.stride), params, `${p}.downsample.1`, kind, opts)
    : x;
  return tf.relu(tf.add(out, shortcut)) as tf.Tensor4D;
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
  let h = tf.relu(
    norm2d(conv(x, params, 'encoder.conv1', plan.stem.stride), params, 'encoder.bn1', plan.norm, opts),
  );
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
  const h1 = tf.relu(batchNorm(h0, params, `${prefix}.1`, { ...opts, training: true }, false));
  return tf.add(
    tf.matMul(h1 as tf.Tensor2D, param(params, `${prefix}.3.weight`) as tf.Tensor2D),
    param(params, `${prefix}.3.bias`),
  ) as tf.Tensor2D;
}
