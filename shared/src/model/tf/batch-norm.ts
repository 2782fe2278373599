import * as tf from '@tensorflow/tfjs-core';
import { releaseGradientInputs } from './conv';

/** ε of every batch norm (PyTorch's default). */
export const BN_EPS = 1e-5;

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

/** What follows the normalization inside the same differentiable unit. */
export interface NormActivation {
  /** Add this tensor (same shape: a residual shortcut) after the scale/shift. */
  residual?: tf.Tensor;
  /** Then apply ReLU. */
  relu?: boolean;
}

/** act(y) without a gradient of its own: batch norm's inference path and the norm units' forward. */
export function applyActivation(y: tf.Tensor, act: NormActivation): tf.Tensor {
  const sum = act.residual ? tf.add(y, act.residual) : y;
  return act.relu ? tf.relu(sum) : sum;
}

/**
 * x·scale + shift (+ ReLU) with one value per channel (the last axis): for NHWC tensors ONE
 * 1×1 depthwise convolution with a bias and a fused activation (one pass over x instead
 * of two or three elementwise kernels; every backend has it), else plain multiply and add.
 * Forward-only: used inside the custom gradients below, which give their own backward.
 */
export function channelAffine(x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor, relu = false): tf.Tensor {
  if (x.rank !== 4) {
    const y = tf.add(tf.mul(x, scale), shift);
    return relu ? tf.relu(y) : y;
  }
  const c = x.shape[3]!;
  return tf.fused.depthwiseConv2d({
    x: x as tf.Tensor4D,
    filter: tf.reshape(scale, [1, 1, c, 1]) as tf.Tensor4D,
    strides: 1,
    pad: 'valid',
    bias: tf.reshape(shift, [c]),
    activation: relu ? 'relu' : 'linear',
  });
}

/**
 * Batch norm from batch moments followed by an optional residual add and ReLU, as ONE
 * differentiable unit with a hand-written gradient:
 *   y = act((x − μ)·γ/√(σ² + ε) + β (+ residual)),  over all axes but the last.
 * Autodiff through `tf.moments`, the scale/shift, the add and the ReLU keeps a dozen
 * full-size intermediates per norm and one gradient tensor per op until the backward
 * pass ends; this unit saves x and y (y is also the next convolution's saved input, so
 * it costs nothing extra) and leaves one gradient tensor. Backward, with dp = dy·[y > 0]:
 *   x̂ = (x − μ)·r,  dβ = Σ dp,  dγ = Σ dp·x̂,  dx = γr·(dp − (x̂·dγ + dβ)/n),  dres = dp.
 * Same maths as autodiff of the composite (checked in the tests).
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
  act: NormActivation = {},
): tf.Tensor {
  const relu = act.relu ?? false;
  const hasResidual = act.residual !== undefined;
  const axes = x.shape.slice(0, -1).map((_, i) => i);
  const localN = x.size / (x.shape[x.shape.length - 1] ?? 1);
  let n = localN;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xt, g, b] = args as tf.Tensor[];
    const residual = hasResidual ? (args[3] as tf.Tensor) : undefined;
    const [mean, variance] = tf.tidy(() => {
      const m = tf.mean(xt!, axes);
      if (!reducer) return [m, tf.mean(tf.square(tf.sub(xt!, m)), axes)];
      // Local mean and Σ(x − m)² combine stably across workers (Chan et al.).
      const global = reducer.moments(localN, m, tf.sum(tf.square(tf.sub(xt!, m)), axes));
      n = global.count;
      return [global.mean, global.variance];
    });
    onMoments?.(mean, variance, n);
    const rstd = tf.rsqrt(tf.add(variance, BN_EPS));
    // x·s + t with s = γr, t = β − μs, then the residual and the ReLU.
    const value = tf.tidy(() => {
      const scale = tf.mul(g!, rstd);
      const shift = tf.sub(b!, tf.mul(mean, scale));
      if (!residual) return channelAffine(xt!, scale, shift, relu);
      return applyActivation(channelAffine(xt!, scale, shift), { relu, residual });
    });
    save(relu ? [xt!, mean, rstd, g!, value] : [xt!, mean, rstd, g!]);
    return {
      value,
      // In its own tidy: the engine runs a custom gradient outside any per-node scope, so
      // its full-size intermediates would otherwise live until the whole backward ends.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const grads = tf.tidy(() => {
          const [sx, sm, sr, sg, sy] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor?];
          const dp = sy ? tf.mul(dy, tf.step(sy)) : dy;
          const xhat = channelAffine(sx, sr, tf.neg(tf.mul(sm, sr)));
          const dBeta = tf.sum(dp, axes);
          const dGamma = tf.sum(tf.mul(dp, xhat), axes);
          const [sumDy, sumDyXhat] = reducer ? reducer.sums(dBeta, dGamma) : [dBeta, dGamma];
          const k = tf.mul(sg, sr);
          // dx = k·(dp − x̂·Σdp·x̂/n − Σdp/n) as dp·k − k·Σdp/n plus x̂·(−k·Σdp·x̂/n): two channel
          // passes and an add instead of four elementwise passes.
          const dx = tf.add(
            channelAffine(dp, k, tf.neg(tf.mul(k, tf.div(sumDy, n)))),
            tf.mul(xhat, tf.neg(tf.mul(k, tf.div(sumDyXhat, n)))),
          );
          // dp is dy itself without a ReLU, and dy is released below.
          return hasResidual ? [dx, dGamma, dBeta, sy ? dp : tf.clone(dp)] : [dx, dGamma, dBeta];
        });
        releaseGradientInputs(dy, saved);
        return grads;
      },
    };
  });
  return act.residual ? f(x, gamma, beta, act.residual) : f(x, gamma, beta);
}
