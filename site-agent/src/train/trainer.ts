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
import { matchWeights } from '@fedssl/shared/model/tf';
import type { TrainingDataset } from '../data/dataset';
import { makeViews } from './augment';
import type { LocalState } from './local-state';
import { nameOptimizerState, positionalOptimizerState } from './optimizer-state';
import { defaultTrainingWorkers, ParallelTrainer } from './parallel/pool';
import {
  Replica,
  type PlainTensor4D,
  type ReplicaInit,
  type StepBatch,
  type TrainEngine,
} from './parallel/replica';

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
  /**
   * The site's state from the previous round (target network, metadata head, and Adam's
   * state when `training.siteOptimizerState` is `keep`).
   */
  localState?: LocalState;
  onProgress?: (p: TrainProgress) => void;
  signal?: AbortSignal;
  logger: Logger;
  /**
   * Adam state to continue from (as returned in {@link TrainRoundResult.optimizerState});
   * standalone training resumes across chunks and checkpoints with it. Takes precedence
   * over a state kept in `localState`.
   */
  optimizerState?: NamedTensors;
  /** Return the Adam state after the last step (off by default: federated rounds start fresh). */
  keepOptimizerState?: boolean;
  /**
   * Place this call's steps inside a longer run for the EMA momentum schedule: step k of
   * this call is step `offset + k` of `total` (default: this call alone).
   */
  schedule?: { offset: number; total: number };
  /**
   * Data-parallel worker threads (each with its own backend, batch-norm moments and
   * gradients combined, same result as one thread up to float rounding); wasm and cpu
   * backends only, the native backend always trains on this thread. Default:
   * {@link defaultTrainingWorkers}.
   */
  workers?: number;
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
  /** Keep on the site for the next round; never upload. Carries Adam's state with `siteOptimizerState: 'keep'`. */
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

/**
 * The previous round's Adam state (`siteOptimizerState: 'keep'`) in the engine's positional
 * form when it was saved for these trainable variables; else undefined, with a warning why.
 */
function keptOptimizerFor(
  localState: LocalState | undefined,
  trainableSpecs: readonly ParamSpec[],
  logger: Logger,
): NamedTensors | undefined {
  const kept = localState?.optimizer;
  if (!kept) return undefined; // first round of the run, or the previous round did not keep it
  const positional = positionalOptimizerState(kept, trainableSpecs);
  if (typeof positional !== 'string') return positional;
  logger.warn(
    { reason: positional, keptStep: kept.step },
    'kept optimizer state does not fit the model (architecture, widths or metadata classes changed): Adam starts fresh this round',
  );
  return undefined;
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
  // The optimizer's variables, in the engine's order (Replica.trainable).
  const trainableSpecs = [...sharedSpecs, ...headSpecs].filter((s) => s.trainable);
  const globalByName = matchWeights(args.globalWeights, sharedSpecs);
  const keepOptimizer = training.siteOptimizerState === 'keep';
  const optimizerStart =
    args.optimizerState ??
    (keepOptimizer ? keptOptimizerFor(args.localState, trainableSpecs, logger) : undefined);

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

  const init: ReplicaInit = {
    model,
    metadataClasses: useMeta ? dataset.metadataClasses : 0,
    lambda,
    learningRate: training.learningRate,
    weightDecay: training.weightDecay,
    online: sharedSpecs.map((sp) => globalByName.get(sp.name)!),
    target: targetInit,
    head: useMeta ? headInit : [],
    ...(optimizerStart ? { optimizerState: optimizerStart } : {}),
  };
  const backend = tf.getBackend();
  const threaded = backend === 'wasm' || backend === 'cpu' ? backend : undefined;
  const batch = Math.max(2, Math.min(training.batchSize, dataset.count));
  // Every worker needs at least one image of each batch.
  const workers = threaded ? Math.min(batch, args.workers ?? defaultTrainingWorkers()) : 1;
  const engine: TrainEngine =
    threaded && workers > 1
      ? await ParallelTrainer.start({ workers, backend: threaded, init })
      : await Replica.create(init);

  const totalSteps = stepsPerRound(dataset.count, training);
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

  /** Batch `step`'s images, augmented on this thread (the PRNG order is the same for any worker count). */
  const prepare = (step: number): StepBatch => {
    // Batch indices: walk a fresh permutation per epoch, wrapping so every batch is full
    // (batch norm needs ≥ 2 samples and equal-sized batches keep steps comparable).
    const labels = new Int32Array(batch);
    const pixels = new Float32Array(batch * pixelsPerImage);
    for (let i = 0; i < batch; i++) {
      if (cursor >= dataset.count) {
        order = shuffled(dataset.count, rand);
        cursor = 0;
      }
      const idx = order[cursor++]!;
      labels[i] = dataset.metadataLabels[idx]!;
      pixels.set(
        dataset.pixels.subarray(idx * pixelsPerImage, (idx + 1) * pixelsPerImage),
        i * pixelsPerImage,
      );
    }
    const tau = args.schedule
      ? emaMomentum(training.emaMomentum, args.schedule.offset + step, args.schedule.total)
      : emaMomentum(training.emaMomentum, step, totalSteps);
    const views = tf.tidy(() => {
      const images = tf.tensor4d(pixels, [batch, dataset.height, dataset.width, 1]);
      const v = makeViews(images, model.inputSize, training.augmentation, rand);
      return [tf.concat(v.global, 0) as tf.Tensor4D, ...v.local];
    });
    const plain = (t: tf.Tensor4D): PlainTensor4D => ({ data: t.dataSync() as Float32Array, shape: t.shape });
    const inputs = { globals: plain(views[0]!), locals: views.slice(1).map(plain), labels, tau };
    tf.dispose(views);
    return inputs;
  };

  try {
    let next = totalSteps > 0 ? prepare(0) : undefined;
    for (let step = 0; step < totalSteps; step++) {
      if (args.signal?.aborted) {
        throw new FedsslError('TRAINING_ABORTED', `training aborted after ${step} of ${totalSteps} steps`, {
          step,
          totalSteps,
        });
      }
      const pending = engine.step(next!);
      pending.catch(() => undefined); // awaited below; not unhandled if prepare() throws first
      // With worker threads, the next batch is augmented here while they train on this one.
      next = step + 1 < totalSteps ? prepare(step + 1) : undefined;
      const losses = await pending;
      lastLoss = losses.loss;
      lastByol = losses.byol;
      lastMeta = losses.metadata;
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
    const state = await engine.read(args.keepOptimizerState === true || keepOptimizer);
    const local = state.online;
    const delta = local.map((t) => {
      const g = globalByName.get(t.name)!.data;
      const d = new Float32Array(t.data.length);
      for (let i = 0; i < d.length; i++) d[i] = t.data[i]! - g[i]!;
      return { name: t.name, shape: t.shape, data: d };
    });
    const keptState =
      keepOptimizer && state.optimizerState
        ? nameOptimizerState(state.optimizerState, trainableSpecs)
        : undefined;
    if (typeof keptState === 'string') {
      logger.warn(
        { reason: keptState },
        'optimizer state not kept for the next round: Adam starts fresh then',
      );
    }
    const localState: LocalState = {
      target: state.target,
      metadataHead: useMeta ? state.head : headInit,
      metadataClasses: useMeta
        ? dataset.metadataClasses
        : (args.localState?.metadataClasses ?? dataset.metadataClasses),
      ...(keptState && typeof keptState !== 'string' ? { optimizer: keptState } : {}),
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
        backend,
        workers,
      },
      'local training round finished',
    );
    const optimizerState = args.keepOptimizerState ? state.optimizerState : undefined;
    return {
      delta,
      exampleCount: dataset.count,
      metrics,
      localState,
      weights: local,
      ...(optimizerState ? { optimizerState } : {}),
    };
  } finally {
    await engine.close();
  }
}
