import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  describeModel,
  initSharedWeights,
  sharedParamSpecs,
  tinyModelConfig,
  trainingConfigSchema,
  type TrainingConfig,
} from '@fedssl/shared/model';
import { isFedsslError } from '@fedssl/shared/errors';
import type { TrainingDataset } from '../data/dataset';
import { selectBackend } from './backend';
import { decodeLocalState, emaMomentum, encodeLocalState, stepsPerRound, trainRound } from './trainer';

const logger = pino({ level: 'silent' });
const model = tinyModelConfig(32);

/** Synthetic images: 4 stripe patterns (the metadata classes) with per-image phase. */
function syntheticDataset(count: number, size = 32): TrainingDataset {
  const pixels = new Float32Array(count * size * size);
  for (let i = 0; i < count; i++) {
    const k = i % 4;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        pixels[(i * size + y) * size + x] = 0.5 + 0.4 * Math.sin(((k + 1) * x + (k % 2) * y + i) / 3);
      }
    }
  }
  return {
    count,
    height: size,
    width: size,
    pixels,
    metadataLabels: Int32Array.from({ length: count }, (_, i) => i % 4),
    metadataClasses: 4,
  };
}

function config(over: Record<string, unknown>): TrainingConfig {
  return trainingConfigSchema.parse({
    batchSize: 8,
    augmentation: { multiCrop: { localViews: 1, sizeFraction: 0.5, scaleMin: 0.05, scaleMax: 0.3 } },
    ...over,
  });
}

beforeAll(async () => {
  await selectBackend(logger, 'wasm');
});

describe('schedules', () => {
  it('counts steps as epochs × ceil(count / batch), capped', () => {
    expect(stepsPerRound(20, config({ localEpochs: 2 }))).toBe(6);
    expect(stepsPerRound(20, config({ localEpochs: 2, maxStepsPerRound: 4 }))).toBe(4);
  });
  it('raises τ from its base to 1 along a cosine', () => {
    expect(emaMomentum(0.99, 0, 11)).toBeCloseTo(0.99, 12);
    expect(emaMomentum(0.99, 5, 11)).toBeCloseTo(0.995, 12);
    expect(emaMomentum(0.99, 10, 11)).toBeCloseTo(1, 12);
  });
});

describe('trainRound', () => {
  const dataset = syntheticDataset(16);
  const globalWeights = initSharedWeights(model, 11);

  it('returns delta = local − global over shared parameters only, leaks nothing', async () => {
    const before = tf.memory().numTensors;
    // τ = 0 with a single step: the target becomes an exact copy of the trained online net,
    // which gives an independent view of the local weights.
    const r = await trainRound({
      model,
      training: config({ maxStepsPerRound: 1, emaMomentum: 0 }),
      globalWeights,
      dataset,
      seed: 5,
      logger,
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(r.delta.map((t) => t.name)).toEqual(sharedParamSpecs(model).map((s) => s.name));
    expect(r.delta.some((t) => t.name.startsWith('metadata_head') || t.name.startsWith('target'))).toBe(
      false,
    );
    expect(r.exampleCount).toBe(16);
    const global = new Map(globalWeights.map((t) => [t.name, t.data]));
    let nonZero = 0;
    for (const local of r.localState.target) {
      const d = r.delta.find((t) => t.name === local.name)!.data;
      const g = global.get(local.name)!;
      for (let i = 0; i < d.length; i++) {
        expect(d[i]).toBe(Math.fround(local.data[i]! - g[i]!));
        if (d[i] !== 0) nonZero++;
      }
    }
    expect(nonZero).toBeGreaterThan(1000);
    // Predictor is shared and trained too.
    expect(r.delta.find((t) => t.name === 'predictor.0.weight')!.data.some((v) => v !== 0)).toBe(true);
    expect(r.localState.metadataHead.map((t) => t.name)).toEqual(
      describeModel(model, { metadataClasses: 4 })
        .filter((s) => !s.shared)
        .map((s) => s.name),
    );
    expect(r.metrics.byolLoss).toBeGreaterThanOrEqual(0);
    expect(r.metrics.byolLoss).toBeLessThanOrEqual(4);
    expect(r.metrics.metadataLoss).toBeGreaterThan(0);
  });

  it('is reproducible for a seed', async () => {
    const run = () =>
      trainRound({
        model,
        training: config({ maxStepsPerRound: 2 }),
        globalWeights,
        dataset,
        seed: 9,
        logger,
      });
    const [a, b] = [await run(), await run()];
    expect(a.metrics.loss).toBe(b.metrics.loss);
    expect(a.delta[0]!.data).toEqual(b.delta[0]!.data);
  });

  it('lowers the BYOL loss over 30 steps on a tiny synthetic dataset', async () => {
    const losses: number[] = [];
    const r = await trainRound({
      model,
      training: config({
        maxStepsPerRound: 30,
        localEpochs: 100,
        metadataWeight: 0,
        learningRate: 3e-3,
        augmentation: { multiCrop: { localViews: 0 } },
      }),
      globalWeights,
      dataset,
      seed: 1,
      logger,
      onProgress: (p) => losses.push(p.loss),
    });
    expect(losses).toHaveLength(30);
    for (const l of losses) {
      expect(Number.isFinite(l)).toBe(true);
      expect(l).toBeGreaterThanOrEqual(0);
      expect(l).toBeLessThanOrEqual(4);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    // Robust: compare averages of the first and last 8 steps, with a clear margin.
    expect(mean(losses.slice(-8))).toBeLessThan(mean(losses.slice(0, 8)) * 0.8);
    expect(r.metrics.metadataLoss).toBe(0);
    expect(r.localState.metadataHead).toEqual([]);
  }, 180_000); // 30 group-norm steps: 100 s measured at load average 11

  it('keeps the local state between rounds and round-trips it through the codec', async () => {
    const first = await trainRound({
      model,
      training: config({ maxStepsPerRound: 1 }),
      globalWeights,
      dataset,
      seed: 2,
      logger,
    });
    const restored = decodeLocalState(encodeLocalState(first.localState));
    expect(restored.metadataClasses).toBe(4);
    expect(restored.target.map((t) => t.name)).toEqual(first.localState.target.map((t) => t.name));
    expect(restored.metadataHead[0]!.data).toEqual(first.localState.metadataHead[0]!.data);
    const second = await trainRound({
      model,
      training: config({ maxStepsPerRound: 1 }),
      globalWeights,
      dataset,
      seed: 2,
      localState: restored,
      logger,
    });
    // Same seed, different starting head/target: the results must differ.
    expect(second.metrics.loss).not.toBe(first.metrics.loss);
  });

  it('stops between steps when aborted, disposing everything', async () => {
    const before = tf.memory().numTensors;
    const controller = new AbortController();
    let err: unknown;
    try {
      await trainRound({
        model,
        training: config({ maxStepsPerRound: 10, localEpochs: 10 }),
        globalWeights,
        dataset,
        seed: 3,
        logger,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.step === 1) controller.abort();
        },
      });
    } catch (e) {
      err = e;
    }
    expect(isFedsslError(err, 'TRAINING_ABORTED')).toBe(true);
    expect((err as Error).message).toBe('training aborted after 1 of 10 steps');
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects weights that do not fit the model', async () => {
    const wrong = initSharedWeights(tinyModelConfig(96), 1);
    await expect(
      trainRound({
        model,
        training: config({ maxStepsPerRound: 1 }),
        globalWeights: wrong,
        dataset,
        seed: 1,
        logger,
      }),
    ).rejects.toMatchObject({
      code: 'MODEL_WEIGHTS_MISMATCH',
    });
  });
});
