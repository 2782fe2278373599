import * as tf from '@tensorflow/tfjs-core';
import { applyActivation, BN_EPS, channelAffine, type NormActivation } from './batch-norm';
import { releaseGradientInputs } from './conv';

/**
 * Per-(sample, group) values `[N, G]` spread to one value per (sample, channel) `[N, 1, 1, C]`:
 * each group's value repeated for its C/G channels.
 */
function perChannel(v: tf.Tensor, n: number, g: number, c: number): tf.Tensor {
  const cg = c / g;
  const spread = cg === 1 ? v : tf.tile(tf.reshape(v, [n, g, 1]), [1, 1, cg]);
  return tf.reshape(spread, [n, 1, 1, c]);
}

/** Sum over each group's channels of `[N, 1, 1, C]` per-(sample, channel) values: `[N, G]`. */
function sumGroups(v: tf.Tensor, n: number, g: number, c: number): tf.Tensor {
  const cg = c / g;
  return cg === 1 ? tf.reshape(v, [n, g]) : tf.sum(tf.reshape(v, [n, g, cg]), 2);
}

/**
 * Group norm of an NHWC tensor followed by an optional residual add and ReLU, as ONE
 * differentiable unit with a hand-written gradient:
 *   y = act(x̂·γ + β (+ residual)),  x̂ = (x − μ)·r,  r = 1/√(σ² + ε),
 * μ and σ² per (sample, group) over H, W and the group's C/G channels. Every reduction is a
 * mean over H, W per (sample, channel) (one average pooling on wasm) followed by sums over a
 * group's channels on the small [N, C] tensors; σ² is the mean of (x − μ)² (two passes, like
 * autodiff's `tf.moments`: E[x²] − μ² loses every digit when a group's values nearly agree,
 * e.g. a 1×1 map). Autodiff through `tf.moments` of the 5-D reshape instead transposes the
 * whole tensor for each moment and keeps a dozen full-size intermediates until the end of the
 * backward pass. Backward, with dp = dy·[y > 0], M = H·W·C/G and per-(n, c) sums
 * A = Σ_hw dp, B = Σ_hw dp·x̂:
 *   dβ = Σ_n A,  dγ = Σ_n B,  a = Σ_g γA / M,  b = Σ_g γB / M,
 *   dx = r·(dp·γ − a − x̂·b) = dp·γr + x̂·(−rb) + (−ra),  dres = dp.
 * Saves x (the previous convolution saves it too), μ, r, γ and y with a ReLU (the next
 * convolution's input), recomputes x̂ backward, and frees them when its gradient has run.
 * Same maths as autodiff of the composite (checked in the tests on wasm and cpu, incl. 1×1
 * maps). Plain tfjs ops: runs on every backend.
 */
export function groupNormCore(
  x: tf.Tensor4D,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  groups: number,
  act: NormActivation = {},
): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const g = groups;
  if (!Number.isInteger(g) || g < 1 || c % g !== 0)
    throw new Error(`group norm: ${c} channels do not split into ${g} groups`);
  const relu = act.relu ?? false;
  const hasResidual = act.residual !== undefined;
  const perGroup = c / g;
  const count = h * w * perGroup;
  /** Mean over each group's channels of per-(sample, channel) values `[N, 1, 1, C]`: `[N, G]`. */
  const groupMean = (v: tf.Tensor) => tf.div(sumGroups(v, n, g, c), perGroup);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xt, gm, bt] = args as [tf.Tensor4D, tf.Tensor, tf.Tensor];
    const residual = hasResidual ? (args[3] as tf.Tensor) : undefined;
    const [mean, rstd, value] = tf.tidy(() => {
      const mu = groupMean(tf.mean(xt, [1, 2], true));
      const centered = tf.sub(xt, perChannel(mu, n, g, c));
      const variance = groupMean(tf.mean(tf.square(centered), [1, 2], true));
      const r = tf.rsqrt(tf.add(variance, BN_EPS));
      const xhat = tf.mul(centered, perChannel(r, n, g, c));
      // γ/β (+ ReLU) as one per-channel pass (a 1×1 depthwise convolution).
      const y = residual
        ? applyActivation(channelAffine(xhat, gm, bt), { relu, residual })
        : channelAffine(xhat, gm, bt, relu);
      return [mu, r, y];
    });
    save(relu ? [xt, mean!, rstd!, gm, value!] : [xt, mean!, rstd!, gm]);
    return {
      value: value!,
      // In its own tidy: the engine runs a custom gradient outside any per-node scope, so
      // its full-size intermediates would otherwise live until the whole backward ends.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const grads = tf.tidy(() => {
          const [sx, sm, sr, sg, sy] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor?];
          const dp = sy ? tf.mul(dy, tf.step(sy)) : dy;
          const rC = perChannel(sr, n, g, c);
          const xhat = tf.mul(tf.sub(sx, perChannel(sm, n, g, c)), rC);
          const hw = h * w;
          const sumDp = tf.mul(tf.mean(dp, [1, 2], true), hw); // A, [N, 1, 1, C]
          const sumDpXhat = tf.mul(tf.mean(tf.mul(dp, xhat), [1, 2], true), hw); // B
          const dBeta = tf.reshape(tf.sum(sumDp, [0, 1, 2]), gamma.shape);
          const dGamma = tf.reshape(tf.sum(sumDpXhat, [0, 1, 2]), gamma.shape);
          const a = tf.div(sumGroups(tf.mul(sumDp, sg), n, g, c), count);
          const b = tf.div(sumGroups(tf.mul(sumDpXhat, sg), n, g, c), count);
          const dx = tf.add(
            tf.add(tf.mul(dp, tf.mul(rC, sg)), tf.mul(xhat, perChannel(tf.neg(tf.mul(sr, b)), n, g, c))),
            perChannel(tf.neg(tf.mul(sr, a)), n, g, c),
          );
          // dp is dy itself without a ReLU, and dy is released below.
          return hasResidual ? [dx, dGamma, dBeta, sy ? dp : tf.clone(dp)] : [dx, dGamma, dBeta];
        });
        releaseGradientInputs(dy, saved);
        return grads;
      },
    };
  });
  return (act.residual ? f(x, gamma, beta, act.residual) : f(x, gamma, beta)) as tf.Tensor4D;
}
