import * as tf from '@tensorflow/tfjs-core';
import '../../site-agent/src/train/gradients';
import type { NamedTensors } from '@fedssl/shared/codec';
import { featureDim, mulberry32, sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';
import { createVariables, disposeParams, encoderForward } from '@fedssl/shared/model/tf';
import { patientFolds } from '../../site-agent/src/eval/folds';
import { accuracy, aucMannWhitney } from '../../site-agent/src/eval/metrics';
import type { ProbeFigures } from './arms';
import type { ProbeData } from './data';

/**
 * Fine-tuning evaluation: the pretrained encoder, unfrozen, plus a linear (logistic) head,
 * trained with binary cross-entropy on a fraction of the training folds' patients (10 % or
 * 100 % of the labels), then AUC and accuracy on the held-out fold — same folds as the
 * linear probe. Adam, no augmentation, batch norm in training mode with its running
 * statistics updated (inference uses them).
 */

export interface FineTuneOptions {
  model: ModelConfig;
  weights: NamedTensors;
  probe: ProbeData;
  /** Share of the training folds' patients whose labels are used (0 < f ≤ 1). */
  fraction: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  /** Evaluate only these fold ids (default all). */
  folds?: number[];
}

/** The training-fold patients kept: `fraction` of each label's patients, at least one each. */
function labelledSubset(train: number[], probe: ProbeData, fraction: number, rand: () => number): number[] {
  if (fraction >= 1) return train;
  const byLabel = new Map<number, number[]>();
  const seen = new Set<number>();
  for (const i of train) {
    const g = probe.groups[i]!;
    if (seen.has(g)) continue;
    seen.add(g);
    const l = probe.labels[i]!;
    byLabel.set(l, [...(byLabel.get(l) ?? []), g]);
  }
  const keep = new Set<number>();
  for (const patients of byLabel.values()) {
    for (let i = patients.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [patients[i], patients[j]] = [patients[j]!, patients[i]!];
    }
    for (const p of patients.slice(0, Math.max(1, Math.round(fraction * patients.length)))) keep.add(p);
  }
  return train.filter((i) => keep.has(probe.groups[i]!));
}

function batchPixels(probe: ProbeData, idx: ArrayLike<number>): tf.Tensor4D {
  const ds = probe.dataset;
  const px = ds.height * ds.width;
  const out = new Float32Array(idx.length * px);
  for (let i = 0; i < idx.length; i++) out.set(ds.pixels.subarray(idx[i]! * px, (idx[i]! + 1) * px), i * px);
  return tf.tensor4d(out, [idx.length, ds.height, ds.width, 1]);
}

/** Fine-tune on each fold's training part and test on the fold. Leaks no tensors. */
export async function fineTuneFolds(o: FineTuneOptions): Promise<ProbeFigures & { steps: number }> {
  const { model, probe } = o;
  const folds = probe.folds ?? patientFolds(probe.groups, 5, 1);
  const foldIds = (o.folds ?? [...new Set(Array.from(folds))]).sort((a, b) => a - b);
  const specs = sharedParamSpecs(model).filter((s) => s.part === 'encoder');
  const encoderWeights = o.weights.filter((t) => t.name.startsWith('encoder.'));
  const dim = featureDim(model);
  const out: ProbeFigures & { steps: number } = { auc: [], accuracy: [], steps: 0 };
  for (const f of foldIds) {
    const rand = mulberry32((o.seed * 7919 + f) >>> 0);
    const train: number[] = [];
    const test: number[] = [];
    for (let i = 0; i < folds.length; i++) (folds[i] === f ? test : train).push(i);
    const labelled = labelledSubset(train, probe, o.fraction, rand);
    const enc = createVariables(encoderWeights, specs);
    const w = tf.variable(tf.zeros([dim, 1]));
    const b = tf.variable(tf.zeros([1]));
    const trainable = [...specs.filter((s) => s.trainable).map((s) => enc.get(s.name)!), w, b];
    const optimizer = tf.train.adam(o.learningRate);
    const batch = Math.max(2, Math.min(o.batchSize, labelled.length));
    const steps = Math.max(1, Math.ceil((o.epochs * labelled.length) / batch));
    let order = labelled.slice();
    let cursor = labelled.length;
    try {
      for (let step = 0; step < steps; step++) {
        const idx: number[] = [];
        while (idx.length < batch) {
          if (cursor >= order.length) {
            order = order.slice();
            for (let i = order.length - 1; i > 0; i--) {
              const j = Math.floor(rand() * (i + 1));
              [order[i], order[j]] = [order[j]!, order[i]!];
            }
            cursor = 0;
          }
          idx.push(order[cursor++]!);
        }
        tf.tidy(() => {
          const x = batchPixels(probe, idx);
          const y = tf.tensor2d(
            idx.map((i) => probe.labels[i]!),
            [batch, 1],
          );
          const stats = new Map<string, tf.Tensor>();
          optimizer.minimize(
            () => {
              const feats = encoderForward(model, enc, x, { training: true, statsOut: stats });
              return tf.losses.sigmoidCrossEntropy(y, tf.add(tf.matMul(feats, w), b)) as tf.Scalar;
            },
            false,
            trainable,
          );
          for (const [name, value] of stats) {
            enc.get(name)!.assign(value);
            value.dispose();
          }
        });
        out.steps++;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      const scores: number[] = [];
      for (let s = 0; s < test.length; s += 64) {
        const part = test.slice(s, s + 64);
        const p = tf.tidy(() =>
          tf.sigmoid(
            tf.add(
              tf.matMul(encoderForward(model, enc, batchPixels(probe, part), { training: false }), w),
              b,
            ),
          ),
        );
        scores.push(...(await p.data()));
        p.dispose();
      }
      const yTest = test.map((i) => probe.labels[i]!);
      out.auc.push(aucMannWhitney(scores, yTest));
      out.accuracy.push(accuracy(scores, yTest));
    } finally {
      disposeParams(enc);
      w.dispose();
      b.dispose();
      optimizer.dispose();
    }
  }
  return out;
}
