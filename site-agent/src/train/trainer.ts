import * as tf from '@tensorflow/tfjs-core';
import './gradients';
import type { Logger } from 'pino';
import type { NamedTensors } from '@fedssl/shared/model';
import { FedsslError } from '@fedssl/shared/errors';
import {
  describeModel,
  initWeights,
  mulberry32,
  type ModelConfig,
  type ParamSpec,
  type TrainingConfig,
} from '@fedssl/shared/model';
import { createVariables, disposeParams, matchWeights, readWeights } from '@fedssl/shared/model/tf';
import type { TrainingDataset } from '../data/dataset';
import { makeViews } from './augment';
import { byolMetadataLoss, targetProjections } from './objective';
import type { LocalState } from './local-state';

export { decodeLocalState, encodeLocalState, type LocalState } from './local-state';

/** Progress after each optimizer step. */
export interface TrainProgress {
  step: number;
  totalSteps: number;
  loss: number;
  imagesPerSecond: number;
  etaSeconds: number;
}

export interface TrainRoundArgs {
  model: ModelConfig;
  training: TrainingConfig;
  /** The global model's shared parameters (any order; checked against the specs). */
  globalWeights: NamedTensors;
  dataset: TrainingDataset;
  /** Seeds batch order, augmentations and a fresh metadata head. */
  seed: number;
  /** The site's state from the previous round (target network, metadata head). */
  localState?: LocalState;
  onProgress?: (p: TrainProgress) => void;
  signal?: AbortSignal;
  logger: Logger;
  /**
   * Adam state to continue from (as returned in {@link TrainRoundResult.optimizerState});
   * standalone training resumes across chunks and checkpoints with it.
   */
  optimizerState?: NamedTensors;
  /** Return the Adam state after the last step (off by default: federated rounds start fresh). */
  keepOptimizerState?: boolean;
  /**
   * Place this call's steps inside a longer run for the EMA momentum schedule: step k of
   * this call is step `offset + k` of `total` (default: this call alone).
   */
  schedule?: { offset: number; total: number };
}

export interface TrainRoundResult {
  /** Shared parameters only, `local − global`, in spec order. */
  delta: NamedTensors;
  exampleCount: number;
  metrics: {
    loss: number;
    byolLoss: number;
    metadataLoss: number;
    steps: number;
    imagesPerSecond: number;
    seconds: number;
  };
  /** Keep on the site for the next round; never upload. */
  localState: LocalState;
  /** Shared parameters after training (`global + delta` without rounding), in spec order. */
  weights: NamedTensors;
  /** Adam state, only when `keepOptimizerState` was set. */
  optimizerState?: NamedTensors;
}

/** Number of optimizer steps of a round: epochs × ceil(count / batch), capped by maxStepsPerRound. */
export function stepsPerRound(count: number, training: TrainingConfig): number {
  const steps = training.localEpochs * Math.ceil(count / training.batchSize);
  return training.maxStepsPerRound > 0 ? Math.min(steps, training.maxStepsPerRound) : steps;
}

/** BYOL's target momentum schedule: τ_k = 1 − (1 − τ₀)·(cos(πk/K) + 1)/2, rising from τ₀ to 1. */
export function emaMomentum(base: number, step: number, totalSteps: number): number {
  if (totalSteps <= 1) return base;
  return 1 - ((1 - base) * (Math.cos((Math.PI * step) / (totalSteps - 1)) + 1)) / 2;
}

function validateDataset(ds: TrainingDataset): void {
  if (ds.count < 1) throw new FedsslError('DATA_EMPTY', 'the training dataset has no images');
  if (ds.pixels.length !== ds.count * ds.height * ds.width) {
    throw new FedsslError(
      'DATA_SOURCE_INVALID',
      `dataset has ${ds.pixels.length} pixel values, expected count·height·width = ${ds.count * ds.height * ds.width}`,
    );
  }
  if (ds.metadataLabels.length !== ds.count) {
    throw new FedsslError(
      'DATA_SOURCE_INVALID',
      `dataset has ${ds.metadataLabels.length} metadata labels for ${ds.count} images`,
    );
  }
  for (const l of ds.metadataLabels) {
    if (l < 0 || l >= ds.metadataClasses) {
      throw new FedsslError('DATA_SOURCE_INVALID', `metadata label out of range [0, ${ds.metadataClasses})`);
    }
  }
}

/** Fisher–Yates with the round's PRNG. */
function shuffled(count: number, rand: () => number): Int32Array {
  const p = Int32Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/** Reuse the previous round's tensors when they still fit the specs, else start from `fallback`. */
function reuseOr(
  previous: NamedTensors | undefined,
  specs: readonly ParamSpec[],
  fallback: () => NamedTensors,
): NamedTensors {
  if (previous) {
    try {
      matchWeights(previous, specs);
      return previous;
    } catch {
      // Architecture or class count changed since the last round: start afresh.
    }
  }
  return fallback();
}

/** Adam's slots as plain arrays: `iter` then first and second moments in trainable order. */
async function saveOptimizer(optimizer: tf.Optimizer): Promise<NamedTensors> {
  const slots = await optimizer.getWeights();
  const out: NamedTensors = [];
  for (const [i, s] of slots.entries()) {
    out.push({
      name: i === 0 ? 'optimizer.iter' : `optimizer.slot.${i - 1}`,
      shape: s.tensor.shape.slice(),
      data: Float32Array.from(await s.tensor.data()),
    });
  }
  slots[0]?.tensor.dispose(); // the iteration scalar is a fresh tensor; the slots are the optimizer's own
  return out;
}

/**
 * Load state from {@link saveOptimizer}. tfjs's Adam matches slots to variables by
 * position, and the trainable list has a fixed order, so positions carry over.
 */
async function restoreOptimizer(optimizer: tf.Optimizer, state: NamedTensors): Promise<void> {
  const tensors = state.map((s) => ({ name: s.name, tensor: tf.tensor(s.data, s.shape, 'float32') }));
  try {
    await optimizer.setWeights(tensors);
  } finally {
    for (const t of tensors) t.tensor.dispose();
  }
}

/**
 * Train one federated round locally: BYOL (online encoder+projector+predictor vs an EMA
 * target, symmetrized, with multi-crop local views) plus λ·cross-entropy of the
 * site-local metadata head, Adam on the current tfjs backend.
 *
 * Returns plain Float32Arrays only; every tensor created here is disposed, so
 * `tf.memory().numTensors` is unchanged by a call (also on error or abort).
 * @throws FedsslError TRAINING_ABORTED when `signal` fires (checked between steps),
 *   DATA_EMPTY / DATA_SOURCE_INVALID for a bad dataset, MODEL_WEIGHTS_MISMATCH for weights
 *   that do not fit `model`.
 */
export async function trainRound(args: TrainRoundArgs): Promise<TrainRoundResult> {
  const { model, training, dataset, logger } = args;
  validateDataset(dataset);
  const lambda = training.metadataWeight;
  const useMeta = lambda > 0 && dataset.metadataClasses > 1;
  const specs = describeModel(model, { metadataClasses: useMeta ? dataset.metadataClasses : 0 });
  const sharedSpecs = specs.filter((s) => s.shared);
  const targetSpecs = specs.filter((s) => s.part === 'encoder' || s.part === 'projector');
  const headSpecs = specs.filter((s) => s.part === 'metadataHead');
  const globalByName = matchWeights(args.globalWeights, sharedSpecs);

  const rand = mulberry32(args.seed);
  const targetInit = reuseOr(args.localState?.target, targetSpecs, () =>
    targetSpecs.map((s) => globalByName.get(s.name)!),
  );
  const headInit = useMeta
    ? reuseOr(
        args.localState?.metadataClasses === dataset.metadataClasses
          ? args.localState.metadataHead
          : undefined,
        headSpecs,
        () => initWeights(headSpecs, (args.seed ^ 0x5eed) >>> 0),
      )
    : (args.localState?.metadataHead ?? []);

  const online = createVariables(args.globalWeights, sharedSpecs);
  const target = createVariables(targetInit, targetSpecs);
  const head = useMeta ? createVariables(headInit, headSpecs) : new Map<string, tf.Variable>();
  const optimizer = tf.train.adam(training.learningRate);
  if (args.optimizerState) await restoreOptimizer(optimizer, args.optimizerState);
  const trainable = [...sharedSpecs, ...headSpecs]
    .filter((s) => s.trainable)
    .map((s) => (online.get(s.name) ?? head.get(s.name))!);
  // Decoupled weight decay on conv/linear kernels only (not norms or biases).
  const decayed = training.weightDecay > 0 ? trainable.filter((v) => v.shape.length >= 2) : [];

  const totalSteps = stepsPerRound(dataset.count, training);
  const batch = Math.max(2, Math.min(training.batchSize, dataset.count));
  const pixelsPerImage = dataset.height * dataset.width;
  const started = performance.now();
  let order = shuffled(dataset.count, rand);
  let cursor = 0;
  let lastLoss = NaN;
  let lastByol = NaN;
  let lastMeta = 0;
  let lossSum = 0;
  let byolSum = 0;
  let metaSum = 0;
  let steps = 0;

  try {
    for (let step = 0; step < totalSteps; step++) {
      if (args.signal?.aborted) {
        throw new FedsslError('TRAINING_ABORTED', `training aborted after ${step} of ${totalSteps} steps`, {
          step,
          totalSteps,
        });
      }
      // Batch indices: walk a fresh permutation per epoch, wrapping so every batch is full
      // (batch norm needs ≥ 2 samples and equal-sized batches keep steps comparable).
      const indices = new Int32Array(batch);
      const labels = new Int32Array(batch);
      const pixels = new Float32Array(batch * pixelsPerImage);
      for (let i = 0; i < batch; i++) {
        if (cursor >= dataset.count) {
          order = shuffled(dataset.count, rand);
          cursor = 0;
        }
        const idx = order[cursor++]!;
        indices[i] = idx;
        labels[i] = dataset.metadataLabels[idx]!;
        pixels.set(
          dataset.pixels.subarray(idx * pixelsPerImage, (idx + 1) * pixelsPerImage),
          i * pixelsPerImage,
        );
      }
      const tau = args.schedule
        ? emaMomentum(training.emaMomentum, args.schedule.offset + step, args.schedule.total)
        : emaMomentum(training.emaMomentum, step, totalSteps);

      const [loss, byol, meta] = tf.tidy(() => {
        const images = tf.tensor4d(pixels, [batch, dataset.height, dataset.width, 1]);
        const views = makeViews(images, model.inputSize, training.augmentation, rand);
        const globals = tf.concat(views.global, 0) as tf.Tensor4D;
        // Target projections of both global views (outside the tape: no gradient).
        const targetZ = targetProjections(model, target, globals);
        const stats = new Map<string, tf.Tensor>();
        let byolOut: tf.Scalar | undefined;
        let metaOut: tf.Scalar | undefined;
        const cost = optimizer.minimize(
          () => {
            const l = byolMetadataLoss({
              model,
              online,
              globals,
              locals: views.local,
              targetZ,
              metadata: useMeta
                ? {
                    head,
                    labels: tf.tensor1d([...labels, ...labels], 'int32'),
                    classes: dataset.metadataClasses,
                    lambda,
                  }
                : null,
              statsOut: stats,
            });
            byolOut = tf.keep(l.byol);
            if (l.metadata) metaOut = tf.keep(l.metadata);
            return l.total;
          },
          true,
          trainable,
        );
        // Running statistics are applied after the step, never inside the tape.
        for (const [name, value] of stats) {
          online.get(name)!.assign(value);
          value.dispose();
        }
        for (const v of decayed) v.assign(tf.mul(v, 1 - training.learningRate * training.weightDecay));
        // EMA of online → target for every target parameter (incl. running stats).
        for (const [name, tv] of target)
          tv.assign(tf.add(tf.mul(tv, tau), tf.mul(online.get(name)!, 1 - tau)));
        return [cost!, byolOut!, metaOut ?? tf.scalar(0)];
      });
      const [lossV, byolV, metaV] = await Promise.all([loss.data(), byol.data(), meta.data()]);
      loss.dispose();
      byol.dispose();
      meta.dispose();
      lastLoss = lossV[0]!;
      lastByol = byolV[0]!;
      lastMeta = metaV[0]!;
      if (!Number.isFinite(lastLoss)) {
        throw new FedsslError('TRAINING_FAILED', `loss became non-finite at step ${step + 1}`, {
          step: step + 1,
        });
      }
      lossSum += lastLoss;
      byolSum += lastByol;
      metaSum += lastMeta;
      steps++;
      const elapsed = (performance.now() - started) / 1000;
      const imagesPerSecond = (steps * batch) / Math.max(elapsed, 1e-9);
      args.onProgress?.({
        step: steps,
        totalSteps,
        loss: lastLoss,
        imagesPerSecond,
        etaSeconds: (elapsed / steps) * (totalSteps - steps),
      });
      // Let sockets, timers and abort signals run between steps.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }

    const seconds = (performance.now() - started) / 1000;
    const local = readWeights(online, sharedSpecs);
    const delta = local.map((t) => {
      const g = globalByName.get(t.name)!.data;
      const d = new Float32Array(t.data.length);
      for (let i = 0; i < d.length; i++) d[i] = t.data[i]! - g[i]!;
      return { name: t.name, shape: t.shape, data: d };
    });
    const localState: LocalState = {
      target: readWeights(target, targetSpecs),
      metadataHead: useMeta ? readWeights(head, headSpecs) : headInit,
      metadataClasses: useMeta
        ? dataset.metadataClasses
        : (args.localState?.metadataClasses ?? dataset.metadataClasses),
    };
    const imagesPerSecond = (steps * batch) / Math.max(seconds, 1e-9);
    const metrics = {
      loss: steps ? lossSum / steps : NaN,
      byolLoss: steps ? byolSum / steps : NaN,
      metadataLoss: steps ? metaSum / steps : 0,
      steps,
      imagesPerSecond,
      seconds,
    };
    logger.info(
      {
        steps,
        seconds: Number(seconds.toFixed(2)),
        imagesPerSecond: Number(imagesPerSecond.toFixed(1)),
        loss: metrics.loss,
        lastLoss,
        lastByol,
        lastMeta,
        backend: tf.getBackend(),
      },
      'local training round finished',
    );
    const optimizerState = args.keepOptimizerState ? await saveOptimizer(optimizer) : undefined;
    return {
      delta,
      exampleCount: dataset.count,
      metrics,
      localState,
      weights: local,
      ...(optimizerState ? { optimizerState } : {}),
    };
  } finally {
    disposeParams(online);
    disposeParams(target);
    disposeParams(head);
    optimizer.dispose();
  }
}
