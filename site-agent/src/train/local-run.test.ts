import * as tf from '@tensorflow/tfjs-core';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWeights } from '@fedssl/shared/codec';
import { sha256Hex } from '@fedssl/shared/crypto';
import { isFedsslError } from '@fedssl/shared/errors';
import {
  initSharedWeights,
  modelConfigSchema,
  sharedParamSpecs,
  trainingConfigSchema,
} from '@fedssl/shared/model';
import type { TrainingDataset } from '../data/dataset';
import { selectBackend } from './backend';
import { trainLocal, type LocalModelManifestFile } from './local-run';
import { trainRound } from './trainer';

const logger = pino({ level: 'silent' });
const model = modelConfigSchema.parse({
  arch: 'tiny',
  inputSize: 16,
  widths: [4, 8, 8],
  projectorHidden: 16,
  projectionDim: 8,
  metadataHidden: 8,
});
const training = trainingConfigSchema.parse({
  batchSize: 4,
  metadataWeight: 0.5,
  augmentation: { multiCrop: { localViews: 1, sizeFraction: 0.5, scaleMin: 0.05, scaleMax: 0.3 } },
});

function dataset(count: number, size: number): TrainingDataset {
  const pixels = new Float32Array(count * size * size);
  for (let i = 0; i < pixels.length; i++) pixels[i] = 0.5 + 0.4 * Math.sin(i / 7 + (i % 13));
  return {
    count,
    height: size,
    width: size,
    pixels,
    metadataLabels: Int32Array.from({ length: count }, (_, i) => i % 3),
    metadataClasses: 3,
  };
}

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'fedssl-train-local-'));
  dirs.push(d);
  return d;
};

beforeAll(async () => {
  await selectBackend(logger, 'wasm');
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('trainLocal', () => {
  const data = dataset(8, 16);

  it('writes the encoder in the published format, marked unsigned, and leaks no tensors', async () => {
    const out = tmp();
    const before = tf.memory().numTensors;
    const r = await trainLocal({
      model,
      training,
      dataset: data,
      seed: 3,
      outDir: out,
      budget: { steps: 3 },
      checkpointEvery: 2,
      logger,
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(r).toMatchObject({ steps: 3, resumedFromStep: 0, stoppedBy: 'steps' });
    const file = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as LocalModelManifestFile;
    const bytes = new Uint8Array(readFileSync(join(out, 'weights.fsw')));
    expect(file.signature).toBeNull();
    expect(file.unsigned).toBe(true);
    expect(file.manifest).toMatchObject({ model, round: 0, strategy: 'local', weightsBytes: bytes.length });
    expect(file.manifest.weightsSha256).toBe(sha256Hex(bytes));
    // Same names, shapes and order as a coordinator-published model of this architecture.
    const { tensors } = decodeWeights(bytes, sharedParamSpecs(model));
    const init = initSharedWeights(model, 3);
    expect(tensors.some((t, i) => t.data.some((v, j) => v !== init[i]!.data[j]))).toBe(true);
    // Only the newest checkpoint is kept.
    expect(readdirSync(join(out, 'checkpoint')).sort()).toEqual([
      'checkpoint.json',
      'step-3.fsw',
      'step-3.state',
    ]);
  });

  it('a stopped run resumes from its last checkpoint and ends where an uninterrupted one does', async () => {
    const out = tmp();
    const ac = new AbortController();
    let err: unknown;
    try {
      await trainLocal({
        model,
        training,
        dataset: data,
        seed: 5,
        outDir: out,
        budget: { steps: 4 },
        checkpointEvery: 2,
        logger,
        signal: ac.signal,
        onCheckpoint: () => ac.abort(),
      });
    } catch (e) {
      err = e;
    }
    expect(isFedsslError(err, 'TRAINING_ABORTED')).toBe(true);
    const resumed = await trainLocal({
      model,
      training,
      dataset: data,
      seed: 5,
      outDir: out,
      budget: { steps: 4 },
      checkpointEvery: 2,
      logger,
    });
    expect(resumed).toMatchObject({ steps: 4, resumedFromStep: 2 });

    const straight = tmp();
    await trainLocal({
      model,
      training,
      dataset: data,
      seed: 5,
      outDir: straight,
      budget: { steps: 4 },
      checkpointEvery: 2,
      logger,
    });
    const a = decodeWeights(new Uint8Array(readFileSync(join(out, 'weights.fsw')))).tensors;
    const b = decodeWeights(new Uint8Array(readFileSync(join(straight, 'weights.fsw')))).tensors;
    let maxDiff = 0;
    a.forEach((t, i) =>
      t.data.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - b[i]!.data[j]!)))),
    );
    expect(maxDiff).toBeLessThan(1e-4);
  });

  it('with a time budget, a short first chunk measures the speed and stops the run in time', async () => {
    const r = await trainLocal({
      model,
      training,
      dataset: data,
      seed: 1,
      outDir: tmp(),
      budget: { seconds: 0.001 },
      checkpointEvery: 50,
      logger,
    });
    expect(r).toMatchObject({ steps: 5, stoppedBy: 'time' });
  });

  it('refuses to resume a checkpoint of other settings', async () => {
    const out = tmp();
    const base = { model, training, dataset: data, outDir: out, budget: { steps: 1 }, logger };
    await trainLocal({ ...base, seed: 1 });
    await expect(trainLocal({ ...base, seed: 2 })).rejects.toThrow(
      /holds a checkpoint of a run with other settings/,
    );
    await expect(trainLocal({ ...base, seed: 2, fresh: true })).resolves.toMatchObject({
      resumedFromStep: 0,
    });
  });
});

describe('trainRound on a ResNet-18-shaped encoder', () => {
  it('trains a step at small width, keeps tensor count stable across steps', async () => {
    // 32 px (local views 16 px): the last stage still sees 2×2 pixels. At 16 px a local view
    // reaches it as 1×1, where group norm (the default) over one value per group outputs a
    // constant and BYOL's normalization of the all-zero features has no gradient (NaN).
    const r18 = modelConfigSchema.parse({
      arch: 'resnet18',
      inputSize: 32,
      widths: [4, 4, 8, 8, 8],
      projectorHidden: 16,
      projectionDim: 8,
      metadataHidden: 8,
    });
    const globalWeights = initSharedWeights(r18, 1);
    expect(globalWeights.filter((t) => t.name.startsWith('encoder.layer4.1.')).length).toBeGreaterThan(0);
    const before = tf.memory().numTensors;
    const counts: number[] = [];
    const r = await trainRound({
      model: r18,
      training: { ...training, localEpochs: 2, maxStepsPerRound: 3 },
      globalWeights,
      dataset: dataset(8, 32),
      seed: 2,
      logger,
      keepOptimizerState: true,
      onProgress: () => counts.push(tf.memory().numTensors),
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(counts).toHaveLength(3);
    expect(new Set(counts).size).toBe(1);
    expect(Number.isFinite(r.metrics.loss)).toBe(true);
    const conv = r.delta.find((t) => t.name === 'encoder.layer4.1.conv2.weight')!;
    expect(conv.data.some((v) => v !== 0)).toBe(true);
    // Adam state: the iteration count plus two moments per trainable tensor.
    expect(r.optimizerState?.[0]).toMatchObject({ name: 'optimizer.iter', data: Float32Array.of(3) });
  });
});
