import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '@fedssl/shared/model';
import { encoderForward, mlpForward, type MomentsReducer } from '@fedssl/shared/model/tf';

/**
 * The training objective of the study, in one place for the trainer and the benchmarks:
 * BYOL's symmetric normalized MSE between online predictions and target projections, plus
 * λ · cross-entropy of the site-local metadata head on the online encoder's features.
 */

type Params = Map<string, tf.Variable>;

/**
 * Each row divided by its L2 norm. The epsilon sits inside the square root: tf.norm's gradient
 * is x/‖x‖, NaN for an all-zero row (e.g. group norm over a 1×1 feature map with one value
 * per group outputs constants), whereas √(Σx² + ε) has a finite gradient everywhere.
 */
function rowNormalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), 1, true), 1e-12)));
}

/** Mean over the batch of 2 − 2·cos(p, z): the normalized MSE of BYOL, in [0, 4]. */
export function byolPairLoss(p: tf.Tensor2D, z: tf.Tensor2D): tf.Scalar {
  const pn = rowNormalize(p);
  const zn = rowNormalize(z);
  return tf.mean(tf.sub(2, tf.mul(2, tf.sum(tf.mul(pn, zn), 1)))) as tf.Scalar;
}

/**
 * Target projections of the two stacked global views (call outside the gradient tape).
 * `reducer`: batch-norm moments shared with the other data-parallel workers.
 */
export function targetProjections(
  model: ModelConfig,
  target: Params,
  globals: tf.Tensor4D,
  reducer?: MomentsReducer,
): [tf.Tensor2D, tf.Tensor2D] {
  const opts = { training: true, ...(reducer ? { reducer } : {}) };
  // Its own tidy: without a tape nothing needs the target's activations once the
  // projections exist, and the caller's scope would otherwise hold all of them (a
  // full forward of both views) through the online forward and backward.
  return tf.tidy(() => {
    const tz = mlpForward('projector', target, encoderForward(model, target, globals, opts), opts);
    return tf.split(tz, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
  });
}

export interface ObjectiveInputs {
  model: ModelConfig;
  online: Params;
  /** Both global views stacked on the batch axis (view 1 first). */
  globals: tf.Tensor4D;
  /** Multi-crop local views: each is predicted against both target projections. */
  locals: readonly tf.Tensor4D[];
  targetZ: [tf.Tensor2D, tf.Tensor2D];
  /** Metadata head, its class index for every row of `globals`, and the number of classes; null disables it. */
  metadata: { head: Params; labels: tf.Tensor1D; classes: number; lambda: number } | null;
  /** Receives the encoder's updated running statistics (applied by the caller after the step). */
  statsOut: Map<string, tf.Tensor>;
  /** Batch-norm moments shared with the other data-parallel workers (absent: one worker). */
  reducer?: MomentsReducer;
}

/** The loss inside the optimizer's tape: total, and its BYOL and metadata parts. */
export function byolMetadataLoss(i: ObjectiveInputs): {
  total: tf.Scalar;
  byol: tf.Scalar;
  metadata: tf.Scalar | null;
} {
  // Gradients for the parameters only: the stem skips the images' input gradient.
  const opts = { training: true, inputGradient: false, ...(i.reducer ? { reducer: i.reducer } : {}) };
  const predict = (feats: tf.Tensor2D) =>
    mlpForward('predictor', i.online, mlpForward('projector', i.online, feats, opts), opts) as tf.Tensor2D;
  const [tz1, tz2] = i.targetZ;
  const feats = encoderForward(i.model, i.online, i.globals, { ...opts, statsOut: i.statsOut });
  const [p1, p2] = tf.split(predict(feats), 2, 0) as [tf.Tensor2D, tf.Tensor2D];
  const terms: tf.Scalar[] = [byolPairLoss(p1, tz2), byolPairLoss(p2, tz1)];
  for (const lv of i.locals) {
    const lp = predict(encoderForward(i.model, i.online, lv, opts));
    terms.push(byolPairLoss(lp, tz1), byolPairLoss(lp, tz2));
  }
  const byol = tf.div(tf.addN(terms), terms.length) as tf.Scalar;
  if (!i.metadata) return { total: byol, byol, metadata: null };
  const { head, labels, classes, lambda } = i.metadata;
  const logits = mlpForward('metadata_head', head, feats, opts);
  const onehot = tf.oneHot(labels, classes);
  const ce = tf.neg(tf.mean(tf.sum(tf.mul(onehot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  return { total: tf.add(byol, tf.mul(ce, lambda)) as tf.Scalar, byol, metadata: ce };
}
