import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeModel,
  initSharedWeights,
  modelConfigSchema,
  trainingConfigSchema,
  type ModelConfig,
  type NamedTensors,
  type TrainingConfig,
} from '@fedssl/shared/model';
import type { TrainingDataset } from '../data/dataset';
import { fileLocalStateStore } from '../uplink/local-state-store';
import { selectBackend } from './backend';
import { nameOptimizerState, positionalOptimizerState } from './optimizer-state';
import { decodeLocalState, encodeLocalState, trainRound, type TrainRoundArgs } from './trainer';

/**
 * `training.siteOptimizerState: 'keep'`: a site's Adam moments and step count survive from
 * one round to the next (through its local state file), and are dropped, with a warning,
 * when they no longer fit the model.
 */

const silent = pino({ level: 'silent' });
const STEPS = 2;
// A small tiny-ResNet at 16 px so each step takes milliseconds.
const model: ModelConfig = modelConfigSchema.parse({
  arch: 'tiny',
  inputSize: 16,
  widths: [4, 8, 8, 8],
  projectorHidden: 16,
  projectionDim: 8,
  metadataHidden: 8,
});

function dataset(classes = 2, count = 8, size = 16): TrainingDataset {
  const pixels = new Float32Array(count * size * size);
  for (let i = 0; i < count; i++)
    for (let p = 0; p < size * size; p++)
      pixels[i * size * size + p] = 0.5 + 0.4 * Math.sin((p * (i + 1)) / 7);
  return {
    count,
    height: size,
    width: size,
    pixels,
    metadataLabels: Int32Array.from({ length: count }, (_, i) => i % classes),
    metadataClasses: classes,
  };
}

const training = (siteOptimizerState?: 'reset' | 'keep'): TrainingConfig =>
  trainingConfigSchema.parse({
    batchSize: 4,
    localEpochs: 100, // maxStepsPerRound bounds the round
    maxStepsPerRound: STEPS,
    learningRate: 1e-2,
    augmentation: { multiCrop: { localViews: 0 } },
    ...(siteOptimizerState ? { siteOptimizerState } : {}),
  });

/** A logger whose warnings the test reads. */
function recordingLogger() {
  const lines: { level: number; msg: string; reason?: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, stream), warnings: () => lines.filter((l) => l.level === 40) };
}

const train = (args: Partial<TrainRoundArgs> & Pick<TrainRoundArgs, 'training' | 'globalWeights'>) =>
  trainRound({ model, dataset: dataset(), seed: 3, logger: silent, workers: 1, ...args });

const trainableSpecs = (m: ModelConfig, classes: number) =>
  describeModel(m, { metadataClasses: classes }).filter(
    (s) => (s.shared || s.part === 'metadataHead') && s.trainable,
  );

const sameWeights = (a: NamedTensors, b: NamedTensors) =>
  expect(a.map((t) => [t.name, Array.from(t.data)])).toEqual(b.map((t) => [t.name, Array.from(t.data)]));

/**
 * Biases right before a batch norm (the MLPs' first layers; projector.3 feeds the predictor's
 * first layer): their gradient is zero up to rounding, which Adam scales to steps of ~lr
 * whatever its state. Comparisons of two computations that differ in float rounding skip them.
 */
const ZERO_GRADIENT = /^(projector\.0|projector\.3|predictor\.0)\.bias$/;

/** Largest |a − b| over the parameters whose gradient is not zero up to rounding. */
function worstDiff(a: NamedTensors, b: NamedTensors): number {
  let worst = 0;
  a.forEach((t, i) => {
    if (ZERO_GRADIENT.test(t.name)) return;
    t.data.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - b[i]!.data[j]!))));
  });
  return worst;
}

const dirs: string[] = [];
beforeAll(async () => {
  await selectBackend(silent, 'wasm');
});
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe("siteOptimizerState: 'keep'", () => {
  const round1Global = initSharedWeights(model, 7);

  it('is absent (reset) by default and validates its values', () => {
    expect(trainingConfigSchema.parse({}).siteOptimizerState).toBeUndefined();
    expect(trainingConfigSchema.safeParse({ siteOptimizerState: 'sometimes' }).success).toBe(false);
  });

  it('keeps Adam state in the local state, continues from it, and survives the state file (agent restart)', async () => {
    const reset1 = await train({ training: training(), globalWeights: round1Global });
    const keep1 = await train({ training: training('keep'), globalWeights: round1Global });
    // Round 1 has nothing to continue from: same update as a reset run.
    sameWeights(keep1.delta, reset1.delta);
    expect(reset1.localState.optimizer).toBeUndefined();
    const kept = keep1.localState.optimizer!;
    expect(kept.step).toBe(STEPS);
    const specs = trainableSpecs(model, 2);
    expect(kept.firstMoment.map((t) => t.name)).toEqual(specs.map((s) => s.name));
    expect(kept.secondMoment.map((t) => t.name)).toEqual(specs.map((s) => s.name));
    expect(kept.secondMoment.every((t) => t.data.some((v) => v > 0))).toBe(true);
    // The upload is the shared delta only, whatever the site keeps.
    expect(keep1.delta.map((t) => t.name)).toEqual(reset1.delta.map((t) => t.name));

    // Round 2 starts from a new global model (here: the site's own round-1 result).
    const round2Global = keep1.weights;
    const reset2 = await train({
      training: training(),
      globalWeights: round2Global,
      localState: keep1.localState,
      seed: 4,
    });
    const keep2 = await train({
      training: training('keep'),
      globalWeights: round2Global,
      localState: keep1.localState,
      seed: 4,
    });
    // The same Adam state passed explicitly (the path train-local resumes its chunks with):
    // the kept state is exactly Adam's, bit for bit.
    const explicit1 = await train({
      training: training(),
      globalWeights: round1Global,
      keepOptimizerState: true,
    });
    const explicit2 = await train({
      training: training(),
      globalWeights: round2Global,
      localState: keep1.localState,
      seed: 4,
      optimizerState: explicit1.optimizerState!,
    });
    sameWeights(keep2.weights, explicit2.weights);
    expect(keep2.weights.some((t, i) => t.data.some((v, j) => v !== reset2.weights[i]!.data[j]))).toBe(true);
    expect(keep2.localState.optimizer!.step).toBe(2 * STEPS);

    // Through the codec and the agent's state file: the same round 2, bit for bit.
    const decoded = decodeLocalState(encodeLocalState(keep1.localState));
    expect(decoded.optimizer!.step).toBe(STEPS);
    sameWeights(decoded.optimizer!.firstMoment, kept.firstMoment);
    sameWeights(decoded.optimizer!.secondMoment, kept.secondMoment);
    const dir = await mkdtemp(join(tmpdir(), 'fedssl-optstate-'));
    dirs.push(dir);
    const codec = { encode: encodeLocalState, decode: decodeLocalState };
    await fileLocalStateStore(dir, codec, silent).save('run-1', keep1.localState);
    const reloaded = await fileLocalStateStore(dir, codec, silent).load('run-1'); // a new process
    const tensorsBefore = tf.memory().numTensors;
    const afterRestart = await train({
      training: training('keep'),
      globalWeights: round2Global,
      localState: reloaded!,
      seed: 4,
    });
    sameWeights(afterRestart.weights, keep2.weights);
    expect(tf.memory().numTensors).toBe(tensorsBefore); // restoring and saving Adam leaks nothing

    // A reset run neither uses nor carries a kept state.
    expect(reset2.localState.optimizer).toBeUndefined();

    // Data-parallel workers keep and continue the same state (up to float rounding).
    const threaded = await train({
      training: training('keep'),
      globalWeights: round2Global,
      localState: keep1.localState,
      seed: 4,
      workers: 2,
    });
    expect(threaded.localState.optimizer!.step).toBe(2 * STEPS);
    expect(worstDiff(threaded.weights, keep2.weights)).toBeLessThan(1e-5); // 6.6e-7 measured
  }, 120_000);

  it("two kept rounds, the second from the site's own result, end where one continuous run of twice the steps does", async () => {
    // Deterministic batches: one batch = the whole dataset (the seed only permutes it, and the
    // losses are means), no random augmentation, a frozen target (τ = 1, so the per-round EMA
    // schedule does not matter). What remains is Adam: reset or kept.
    const still = (siteOptimizerState?: 'reset' | 'keep', steps = STEPS) =>
      trainingConfigSchema.parse({
        ...training(siteOptimizerState),
        batchSize: 8,
        maxStepsPerRound: steps,
        emaMomentum: 1,
        augmentation: {
          randomResizedCrop: { enabled: false },
          horizontalFlip: { enabled: false },
          multiCrop: { localViews: 0 },
        },
      });
    const continuous = await train({ training: still(undefined, 2 * STEPS), globalWeights: round1Global });
    const twoRounds = async (mode: 'reset' | 'keep') => {
      const r1 = await train({ training: still(mode), globalWeights: round1Global });
      return train({ training: still(mode), globalWeights: r1.weights, localState: r1.localState, seed: 9 });
    };
    const kept = worstDiff((await twoRounds('keep')).weights, continuous.weights);
    const reset = worstDiff((await twoRounds('reset')).weights, continuous.weights);
    // Float rounding of the permuted batch (4e-7 measured) against Adam's restart (~lr).
    expect(kept).toBeLessThan(1e-5);
    expect(reset).toBeGreaterThan(1e-3);
  }, 120_000);

  it('drops a kept state that no longer fits (model or metadata classes changed), with a warning', async () => {
    const keep1 = await train({ training: training('keep'), globalWeights: round1Global });

    // Wider projector: the shared shapes changed.
    const wider = modelConfigSchema.parse({ ...model, projectionDim: 12 });
    const widerGlobal = initSharedWeights(wider, 8);
    const rec = recordingLogger();
    const keptRun = await train({
      model: wider,
      training: training('keep'),
      globalWeights: widerGlobal,
      localState: keep1.localState,
      logger: rec.logger,
    });
    const resetRun = await train({
      model: wider,
      training: training(),
      globalWeights: widerGlobal,
      localState: keep1.localState,
    });
    sameWeights(keptRun.weights, resetRun.weights);
    const warned = rec
      .warnings()
      .find((w) => w.msg.startsWith('kept optimizer state does not fit the model'));
    expect(warned?.reason).toMatch(/^its first moment for '(projector|predictor)\.[^']+' has shape \[/);
    expect(keptRun.localState.optimizer!.step).toBe(STEPS); // fresh Adam, kept from now on

    // Three metadata classes instead of two: the head's last layer changed shape.
    const rec3 = recordingLogger();
    const threeClasses = await train({
      training: training('keep'),
      globalWeights: round1Global,
      localState: keep1.localState,
      dataset: dataset(3),
      logger: rec3.logger,
    });
    const threeReset = await train({
      training: training(),
      globalWeights: round1Global,
      localState: keep1.localState,
      dataset: dataset(3),
    });
    sameWeights(threeClasses.weights, threeReset.weights);
    expect(rec3.warnings().some((w) => /metadata_head/.test(w.reason ?? ''))).toBe(true);
  }, 120_000);
});

describe('optimizer state naming', () => {
  const specs = trainableSpecs(model, 2);
  const positional: NamedTensors = [
    { name: 'optimizer.iter', shape: [], data: Float32Array.of(5) },
    ...[...specs, ...specs].map((s, i) => ({
      name: `optimizer.slot.${i}`,
      shape: s.shape.slice(),
      data: new Float32Array(s.shape.reduce((a, b) => a * b, 1)).fill(i),
    })),
  ];

  it('names positional slots by parameter and back, losslessly', () => {
    const named = nameOptimizerState(positional, specs);
    if (typeof named === 'string') throw new Error(named);
    expect(named.step).toBe(5);
    expect(named.firstMoment[1]!.name).toBe(specs[1]!.name);
    expect(named.secondMoment[0]!.data[0]).toBe(specs.length);
    const back = positionalOptimizerState(named, specs);
    if (typeof back === 'string') throw new Error(back);
    expect(back.map((t) => [t.shape, Array.from(t.data)])).toEqual(
      positional.map((t) => [t.shape, Array.from(t.data)]),
    );
  });

  it('says why a state does not fit', () => {
    expect(nameOptimizerState(positional.slice(0, -1), specs)).toBe(
      `the optimizer holds ${2 * specs.length - 1} moment slots, the model has ${specs.length} trainable variables (2 slots each)`,
    );
    const named = nameOptimizerState(positional, specs) as Exclude<
      ReturnType<typeof nameOptimizerState>,
      string
    >;
    expect(positionalOptimizerState(named, specs.slice(1))).toBe(
      `it was saved for ${specs.length} trainable variables, the model has ${specs.length - 1}`,
    );
    const renamed = specs.map((s, i) => (i === 0 ? { ...s, name: 'encoder.other.weight' } : s));
    expect(positionalOptimizerState(named, renamed)).toBe(
      "it has no first moment for 'encoder.other.weight'",
    );
    const reshaped = specs.map((s, i) => (i === 0 ? { ...s, shape: [1, ...s.shape] } : s));
    expect(positionalOptimizerState(named, reshaped)).toBe(
      `its first moment for '${specs[0]!.name}' has shape [${specs[0]!.shape.join(', ')}], the model [1, ${specs[0]!.shape.join(', ')}]`,
    );
  });
});
