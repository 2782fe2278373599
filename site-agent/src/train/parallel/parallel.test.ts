import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  describeModel,
  initWeights,
  mulberry32,
  tinyModelConfig,
  type ModelConfig,
} from '@fedssl/shared/model';
import type { NamedTensors } from '@fedssl/shared/model';
import { trainingConfigSchema } from '@fedssl/shared/model';
import { isFedsslError } from '@fedssl/shared/errors';
import type { TrainingDataset } from '../../data/dataset';
import { selectBackend } from '../backend';
import { trainRound } from '../trainer';
import { agentTrainingWorkers, ParallelTrainer, workerRows } from './pool';
import { Replica, type ReplicaInit, type ReplicaState, type StepBatch, type TrainEngine } from './replica';

// The pool runs the compiled worker (site-agent/dist): build site-agent before this file.
// Every pool starts threads that each load TensorFlow.js (~3 s idle, far more at this
// machine's load): tests that start one get a longer timeout.
const POOL_TIMEOUT = 120_000;

const SIZE = 16;
// Odd: two workers get 2 and 3 images, so the loss and gradient weights b/B differ.
const BATCH = 5;
const CLASSES = 3;

function init(model: ModelConfig): ReplicaInit {
  const specs = describeModel(model, { metadataClasses: CLASSES });
  const all = new Map(initWeights(specs, 7).map((t) => [t.name, t]));
  const pick = (keep: (s: (typeof specs)[number]) => boolean) =>
    specs.filter(keep).map((s) => all.get(s.name)!);
  return {
    model,
    metadataClasses: CLASSES,
    lambda: 0.5,
    learningRate: 1e-3,
    weightDecay: 1e-4,
    online: pick((s) => s.shared),
    target: pick((s) => s.part === 'encoder' || s.part === 'projector'),
    head: pick((s) => s.part === 'metadataHead'),
  };
}

/** Two steps of fixed random views (with one multi-crop local view), as the trainer would feed them. */
function batches(): StepBatch[] {
  const rand = mulberry32(3);
  const img = (n: number, s: number) => ({
    data: Float32Array.from({ length: n * s * s }, () => rand()),
    shape: [n, s, s, 1] as [number, number, number, number],
  });
  return [0.99, 0.995].map((tau) => ({
    globals: img(2 * BATCH, SIZE),
    locals: [img(BATCH, SIZE / 2)],
    labels: Int32Array.from({ length: BATCH }, (_, i) => i % CLASSES),
    tau,
  }));
}

async function train(engine: TrainEngine): Promise<{ losses: number[]; state: ReplicaState }> {
  try {
    const losses: number[] = [];
    for (const b of batches()) losses.push((await engine.step(b)).loss);
    return { losses, state: await engine.read(true) };
  } finally {
    await engine.close();
  }
}

/**
 * Biases whose gradient is exactly zero: a constant added to every row just before a
 * batch norm (the first Linear of each MLP head), or before such a Linear (the online
 * projector's output feeds only the predictor). Their computed gradient is float noise
 * of zero, which Adam scales up to steps of about ±lr with either worker count, so they
 * are not comparable; they are checked to have stayed within Adam's step bound instead.
 */
const ZERO_GRADIENT = /^(projector|predictor|metadata_head)\.0\.bias$|^projector\.3\.bias$/;

/** Largest per-tensor relative difference ‖a − b‖ / ‖b‖ (absolute for all-zero tensors). */
function maxRelativeError(a: NamedTensors, b: NamedTensors): { name: string; err: number } {
  let worst = { name: '', err: 0 };
  b.forEach((t, i) => {
    const u = a[i]!;
    expect(u.name).toBe(t.name);
    if (ZERO_GRADIENT.test(t.name)) return;
    let diff = 0;
    let norm = 0;
    for (let j = 0; j < t.data.length; j++) {
      diff += (u.data[j]! - t.data[j]!) ** 2;
      norm += t.data[j]! ** 2;
    }
    const err = Math.sqrt(diff) / (norm > 0 ? Math.sqrt(norm) : 1);
    if (err > worst.err) worst = { name: t.name, err };
  });
  return worst;
}

function expectSameTraining(
  model: ModelConfig,
  parallel: { losses: number[]; state: ReplicaState },
  single: { losses: number[]; state: ReplicaState },
) {
  for (const [i, l] of single.losses.entries()) expect(parallel.losses[i]).toBeCloseTo(l, 4);
  for (const part of ['online', 'target', 'head'] as const) {
    const { name, err } = maxRelativeError(parallel.state[part], single.state[part]);
    if (process.env.FEDSSL_PRINT_ERRORS) console.log(model.norm, part, name, err);
    expect(err, `${part} ${name}`).toBeLessThan(1e-4);
  }
  const start = init(model);
  for (const part of ['online', 'head'] as const) {
    for (const [i, t] of parallel.state[part].entries()) {
      if (!ZERO_GRADIENT.test(t.name)) continue;
      const w0 = start[part][i]!.data;
      // Two Adam steps move a weight by at most about 2 · 3 · lr (lr = 1e-3).
      for (const [j, v] of t.data.entries()) expect(Math.abs(v - w0[j]!)).toBeLessThan(6e-3);
    }
  }
  // Training moved the weights far more than the difference between the two.
  expect(maxRelativeError(single.state.online, start.online).err).toBeGreaterThan(1e-3);
}

beforeAll(async () => {
  await selectBackend(pino({ level: 'silent' }), 'wasm');
});

describe('agentTrainingWorkers (the site agent default without trainWorkers)', () => {
  it('uses the cores, at most two (the measured case), and never fewer than one', () => {
    expect(agentTrainingWorkers(1)).toBe(1);
    expect(agentTrainingWorkers(2)).toBe(2);
    expect(agentTrainingWorkers(32)).toBe(2);
    expect(agentTrainingWorkers(0)).toBe(1);
  });
});

describe('workerRows', () => {
  it('splits images into ordered, nearly equal, covering ranges', () => {
    expect([0, 1].map((k) => workerRows(6, 2, k))).toEqual([
      [0, 3],
      [3, 6],
    ]);
    expect([0, 1, 2].map((k) => workerRows(7, 3, k))).toEqual([
      [0, 2],
      [2, 4],
      [4, 7],
    ]);
  });
});

/** The exit codes a pool's worker threads end with (test-only peek at its handles). */
function exitCodes(pool: ParallelTrainer): Promise<number[]> {
  return Promise.all(
    (pool as unknown as { handles: { exited: Promise<number> }[] }).handles.map((h) => h.exited),
  );
}

/** Stripes of 3 patterns (the metadata classes), 16 px. */
function dataset(count: number): TrainingDataset {
  const pixels = new Float32Array(count * SIZE * SIZE);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < SIZE * SIZE; j++) {
      pixels[i * SIZE * SIZE + j] =
        0.5 + 0.4 * Math.sin((((i % 3) + 1) * (j % SIZE) + i + Math.floor(j / SIZE)) / 3);
    }
  }
  return {
    count,
    height: SIZE,
    width: SIZE,
    pixels,
    metadataLabels: Int32Array.from({ length: count }, (_, i) => i % CLASSES),
    metadataClasses: CLASSES,
  };
}

describe('data-parallel training equals one worker', () => {
  it(
    'batch norm, through trainRound (augmentation, a multi-crop view): 2 workers give the weights of 1 after 2 steps',
    async () => {
      const model = { ...tinyModelConfig(SIZE), norm: 'batch' as const };
      const round = (workers: number) =>
        trainRound({
          model,
          training: trainingConfigSchema.parse({
            batchSize: BATCH,
            maxStepsPerRound: 2,
            weightDecay: 1e-4,
            metadataWeight: 0.5,
            augmentation: { multiCrop: { localViews: 1, sizeFraction: 0.5, scaleMin: 0.05, scaleMax: 0.3 } },
          }),
          globalWeights: init(model).online,
          dataset: dataset(11),
          seed: 5,
          logger: pino({ level: 'silent' }),
          keepOptimizerState: true,
          workers,
        });
      const before = tf.memory().numTensors;
      const one = await round(1);
      const two = await round(2);
      expect(tf.memory().numTensors).toBe(before);
      const state = (r: typeof one): ReplicaState => ({
        online: r.weights,
        target: r.localState.target,
        head: r.localState.metadataHead,
      });
      expect(two.metrics.steps).toBe(2);
      expectSameTraining(
        model,
        { losses: [two.metrics.loss], state: state(two) },
        { losses: [one.metrics.loss], state: state(one) },
      );
      // Adam's state comes back from worker 0 in the same layout (its values include the
      // squared noise of the zero-gradient biases, so they are not compared).
      expect(two.optimizerState!.map((t) => [t.name, t.shape])).toEqual(
        one.optimizerState!.map((t) => [t.name, t.shape]),
      );
    },
    POOL_TIMEOUT,
  );

  it(
    'group norm: 2 workers give the weights of 1 after 2 steps (relative error < 1e-4); close() ends the threads',
    async () => {
      const model = { ...tinyModelConfig(SIZE), norm: 'group' as const };
      const before = tf.memory().numTensors;
      const single = await train(await Replica.create(init(model)));
      expect(tf.memory().numTensors).toBe(before);
      const pool = await ParallelTrainer.start({ workers: 2, backend: 'wasm', init: init(model) });
      expectSameTraining(model, await train(pool), single);
      expect(await exitCodes(pool)).toEqual([0, 0]);
      await expect(pool.step(batches()[0]!)).rejects.toThrow('the training worker pool is closed');
    },
    POOL_TIMEOUT,
  );
});

describe('worker failures', () => {
  it(
    'a worker failing mid-step surfaces as a FedsslError with its message; the waiting worker is released',
    async () => {
      const pool = await ParallelTrainer.start({
        workers: 2,
        backend: 'wasm',
        init: init({ ...tinyModelConfig(SIZE), norm: 'batch' }),
      });
      const bad = batches()[0]!;
      // Worker 1's local-view rows come up short: worker 0 is already waiting in the first batch norm.
      const local = bad.locals[0]!;
      bad.locals[0] = { ...local, data: local.data.subarray(0, local.data.length - 5) };
      const err = await pool.step(bad).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isFedsslError(err, 'TRAINING_FAILED')).toBe(true);
      expect((err as Error).message).toMatch(/^training worker 1: .*should have 192 values but has 187/);
      expect((err as { details?: unknown }).details).toEqual({ worker: 1 });
      await pool.close();
    },
    POOL_TIMEOUT,
  );

  it(
    'a worker failing at start (weights that do not fit) rejects start with the worker error code',
    async () => {
      const bad = init(tinyModelConfig(SIZE));
      bad.online = bad.online.slice(1);
      const err = await ParallelTrainer.start({ workers: 2, backend: 'wasm', init: bad }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isFedsslError(err, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
      expect((err as Error).message).toBe("training worker 0: weights lack tensor 'encoder.conv1.weight'");
    },
    POOL_TIMEOUT,
  );
});
