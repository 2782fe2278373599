import { describe, it, expect } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { decodeWeights, encodeWeights } from '@fedssl/shared/codec';
import { generatePartyKeys, keyId, sha256Hex, signModelManifest } from '@fedssl/shared/crypto';
import {
  initSharedWeights,
  type ModelConfig,
  modelConfigSchema,
  sharedParamSpecs,
  tinyModelConfig,
  trainingConfigSchema,
} from '@fedssl/shared/model';
import { createVariables, disposeParams, encoderForward, fileLoadHandler } from '@fedssl/shared/model/tf';
import type { ModelManifest } from '@fedssl/shared/protocol';
import { exportModel } from './export-model';

function published(model = tinyModelConfig(32), extra: Partial<ModelManifest> = {}) {
  const bytes = encodeWeights(initSharedWeights(model, 2));
  const manifest: ModelManifest = {
    version: 'run-9.r4',
    runId: 'run-9',
    round: 4,
    model,
    weightsSha256: sha256Hex(bytes),
    weightsBytes: bytes.length,
    parentVersion: 'run-9.r3',
    parentSha256: 'a'.repeat(64),
    sites: [{ siteId: 'st-mary', exampleCount: 120 }],
    strategy: 'median',
    createdAt: '2026-01-02T03:04:05.000Z',
    ...extra,
  };
  const keys = generatePartyKeys();
  const signed = signModelManifest(manifest, keys.signing.secretKey, keyId(keys.signing.publicKey));
  return { bytes, manifest, signed };
}

const training = trainingConfigSchema.parse({
  localUpdate: 'fedema',
  fedemaScaler: 0.3,
  learningRate: 0.002,
});

describe('exportModel', () => {
  it('fsw: the signed bytes unchanged, the manifest and a card with the hyperparameters; no temp files left', async () => {
    const p = published();
    const out = mkdtempSync(join(tmpdir(), 'fedssl-export-'));
    const { files } = await exportModel({
      signed: p.signed,
      manifest: p.manifest,
      weights: p.bytes,
      format: 'fsw',
      outDir: out,
      coordinatorFingerprint: 'ab cd',
      training,
    });
    expect(files).toEqual(['weights.fsw', 'manifest.json', 'model-card.json', 'MODEL_CARD.md']);
    expect(readdirSync(out).sort()).toEqual([
      'MODEL_CARD.md',
      'manifest.json',
      'model-card.json',
      'weights.fsw',
    ]);
    expect(new Uint8Array(readFileSync(join(out, 'weights.fsw')))).toEqual(p.bytes);
    expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))).toEqual(p.signed);
    const card = JSON.parse(readFileSync(join(out, 'model-card.json'), 'utf8'));
    expect(card.hyperparameters).toEqual(training);
    expect(card.hyperparametersSource).toBe('run');
    expect(card.federation).toMatchObject({ strategy: 'median', strategyOptions: null, seed: null });
    expect(card.provenance).toEqual({
      weightsSha256: p.manifest.weightsSha256,
      weightsBytes: p.bytes.length,
      parentVersion: 'run-9.r3',
      parentSha256: 'a'.repeat(64),
      coordinatorFingerprint: 'ab cd',
      manifestKeyId: p.signed.keyId,
    });
    const md = readFileSync(join(out, 'MODEL_CARD.md'), 'utf8');
    expect(md).toContain('- local update: fedema (λ = 0.3)');
    expect(md).toContain('- site optimizer state between rounds: reset (fresh Adam moments every round)');
    expect(md).toContain('learning rate 0.002');
    expect(md).toContain('3×3 stride-1 stem without max-pool');
    expect(md).toContain(
      '(From the run record, not signed: this version predates hyperparameters in the manifest.)',
    );
  });

  it('prefers the hyperparameters, strategy options, seed and input signed into the manifest', async () => {
    const signedTraining = trainingConfigSchema.parse({
      batchSize: 8,
      learningRate: 0.05,
      siteOptimizerState: 'keep',
    });
    const p = published(tinyModelConfig(32), {
      input: { channels: 1, size: 32, normalization: 'pixels / 255' },
      hyperparameters: {
        training: { ...signedTraining },
        strategy: { name: 'fedadam', serverLearningRate: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001 },
        seed: 77,
      },
    });
    const out = mkdtempSync(join(tmpdir(), 'fedssl-export-'));
    const { card } = await exportModel({
      signed: p.signed,
      manifest: p.manifest,
      weights: p.bytes,
      format: 'fsw',
      outDir: out,
      coordinatorFingerprint: 'x',
      training, // the run record disagrees; the signed values win
    });
    expect(card.hyperparameters).toEqual(signedTraining);
    expect(card.hyperparametersSource).toBe('manifest');
    expect(card.input).toMatchObject({ channels: 1, size: 32, normalization: 'pixels / 255' });
    expect(card.federation).toMatchObject({
      strategyOptions: { name: 'fedadam', serverLearningRate: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001 },
      seed: 77,
    });
    expect(JSON.parse(readFileSync(join(out, 'model-card.json'), 'utf8'))).toEqual(card);
    const md = readFileSync(join(out, 'MODEL_CARD.md'), 'utf8');
    expect(md).toContain(
      '- strategy options: `{"name":"fedadam","serverLearningRate":0.01,"beta1":0.9,"beta2":0.99,"tau":0.001}`',
    );
    expect(md).toContain('- initial weights seed: 77');
    expect(md).toContain('- normalization: pixels / 255');
    expect(md).toContain('batch size 8, learning rate 0.05');
    expect(md).toContain(
      "- site optimizer state between rounds: keep (each site's Adam moments and step count continue from its previous round)",
    );
    expect(md).toContain('(Signed by the coordinator in the manifest.)');
    expect(md).toContain('"randomResizedCrop":{"enabled":true,"scaleMin":0.3,"scaleMax":1}');
  });

  /** A tfjs export of `p` into `outDir` (no run record). */
  const tfjsExport = (p: ReturnType<typeof published>, outDir: string, tfjsInputSize?: number) =>
    exportModel({
      signed: p.signed,
      manifest: p.manifest,
      weights: p.bytes,
      format: 'tfjs',
      outDir,
      coordinatorFingerprint: 'x',
      training: null,
      tfjsInputSize,
    });

  /** Features of the exported model.json reloaded with the stock loader, and of encoderForward. */
  async function exportedAndForwardFeatures(
    dir: string,
    model: ModelConfig,
    bytes: Uint8Array,
    size: number,
  ) {
    const loaded = await tfl.loadLayersModel(fileLoadHandler(dir));
    const params = createVariables(
      decodeWeights(bytes, sharedParamSpecs(model)).tensors,
      sharedParamSpecs(model),
    );
    const x = tf.randomUniform([2, size, size, 1], 0, 1, 'float32', 5) as tf.Tensor4D;
    const got = loaded.predict(x) as tf.Tensor;
    const want = tf.tidy(() => encoderForward(model, params, x, { training: false }));
    const maxAbsDiff = tf.tidy(() => tf.max(tf.abs(tf.sub(got, want))).dataSync()[0]!);
    const inputShape = loaded.inputs[0]!.shape;
    tf.dispose([x, got, want]);
    disposeParams(params);
    loaded.dispose();
    return { maxAbsDiff, inputShape };
  }

  it('tfjs: a group-norm encoder as stock layers, at its input size and at another, same features as the forward pass', async () => {
    const model = modelConfigSchema.parse({ arch: 'tiny', inputSize: 32, norm: 'group' });
    const p = published(model);
    for (const [tfjsInputSize, size] of [
      [undefined, 32],
      [48, 48],
    ] as const) {
      const out = mkdtempSync(join(tmpdir(), 'fedssl-export-'));
      const { files, card } = await tfjsExport(p, out, tfjsInputSize);
      expect(files).toEqual([
        'model.json',
        'weights.bin',
        'manifest.json',
        'model-card.json',
        'MODEL_CARD.md',
      ]);
      expect(card.files['model.json']).toBe(
        `TF.js LayersModel topology of the encoder (group norm from stock layers; input fixed at ${size}×${size}×1)`,
      );
      const json = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
      expect(json.userDefinedMetadata.fedssl).toMatchObject({
        version: 'run-9.r4',
        inputSize: 32,
        norm: 'group',
      });
      const r = await exportedAndForwardFeatures(out, model, p.bytes, size);
      expect(r.inputShape).toEqual([null, size, size, 1]);
      expect(r.maxAbsDiff).toBeLessThan(1e-4);
    }
  }, 180_000);

  it('tfjs: a batch-norm graph takes any size; a wrong input size is refused before writing anything', async () => {
    const batch = modelConfigSchema.parse({ arch: 'tiny', inputSize: 32, norm: 'batch' });
    const p = published(batch);
    const out = mkdtempSync(join(tmpdir(), 'fedssl-export-'));
    const { card } = await tfjsExport(p, out);
    expect(card.files['model.json']).toBe(
      'TF.js LayersModel topology of the encoder (inference-mode batch norm; any input size)',
    );
    const r = await exportedAndForwardFeatures(out, batch, p.bytes, 48);
    expect(r.inputShape).toEqual([null, null, null, 1]);
    expect(r.maxAbsDiff).toBeLessThan(1e-4);

    const group = published(modelConfigSchema.parse({ arch: 'tiny', inputSize: 32, norm: 'group' }));
    const empty = mkdtempSync(join(tmpdir(), 'fedssl-export-'));
    await expect(tfjsExport(group, empty, 600)).rejects.toThrow(
      'TF.js export input size must be an integer from 16 to 512 pixels, got 600',
    );
    expect(readdirSync(empty)).toEqual([]);
  });
});
