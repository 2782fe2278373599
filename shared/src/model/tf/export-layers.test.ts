import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, it } from 'vitest';
import { isFedsslError } from '../../errors';
import { initSharedWeights } from '../init';
import { modelConfigSchema } from '../config';
import { resnet18ModelConfig, tinyModelConfig } from '../presets';
import { featureDim, sharedParamSpecs } from '../spec';
import {
  buildEncoderLayersModel,
  createVariables,
  disposeParams,
  encoderForward,
  fileLoadHandler,
  saveLayersModelToDir,
} from './index';

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

/** Published-like weights with non-trivial batch-norm statistics (not just 0 / 1). */
function weightsFor(config: Parameters<typeof initSharedWeights>[0], seed: number) {
  let x = seed;
  const rnd = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
  return initSharedWeights(config, seed).map((t) => {
    if (t.name.endsWith('running_mean')) return { ...t, data: t.data.map(() => rnd() - 0.5) };
    if (t.name.endsWith('running_var')) return { ...t, data: t.data.map(() => 0.5 + rnd()) };
    if (/bn\d\.(weight|bias)$|downsample\.1\.(weight|bias)$/.test(t.name))
      return { ...t, data: t.data.map(() => rnd() + 0.25) };
    return t;
  });
}

describe('TF.js LayersModel export of the encoder', () => {
  for (const [label, config, size] of [
    ['tiny 32 (3×3 stem)', tinyModelConfig(32), 32],
    [
      'resnet18 small widths 96 (7×7 stem + max-pool, downsample)',
      resnet18ModelConfig(96, [4, 4, 8, 8, 16]),
      96,
    ],
  ] as const) {
    it(`saved to files and loaded back, gives encoderForward's inference features: ${label}`, async () => {
      const weights = weightsFor(config, 11);
      const dir = mkdtempSync(join(tmpdir(), 'fedssl-tfjs-'));
      const before = tf.memory().numTensors;
      const built = buildEncoderLayersModel(config, weights);
      expect(built.layers.map((l) => l.name)).toContain('layer1.0.conv1');
      await saveLayersModelToDir(built, dir, { fedssl: { version: 'run-1.r3' } });
      built.dispose();

      const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as {
        format: string;
        weightsManifest: { paths: string[] }[];
        userDefinedMetadata: unknown;
      };
      expect(json.format).toBe('layers-model');
      expect(json.weightsManifest[0]!.paths).toEqual(['weights.bin']);
      expect(json.userDefinedMetadata).toEqual({ fedssl: { version: 'run-1.r3' } });

      const loaded = await tfl.loadLayersModel(fileLoadHandler(dir));
      const params = createVariables(weights, sharedParamSpecs(config));
      const x = tf.randomUniform([2, size, size, 1], 0, 1, 'float32', 3) as tf.Tensor4D;
      const got = loaded.predict(x) as tf.Tensor2D;
      const want = tf.tidy(() => encoderForward(config, params, x, { training: false }));
      expect(got.shape).toEqual([2, featureDim(config)]);
      const [diff, scale] = tf.tidy(() => [tf.max(tf.abs(tf.sub(got, want))), tf.max(tf.abs(want))]);
      const maxAbsDiff = (await diff!.data())[0]!;
      expect(maxAbsDiff).toBeLessThan(1e-4);
      // The features are not trivially equal (e.g. all zero).
      expect((await scale!.data())[0]!).toBeGreaterThan(1e-3);
      tf.dispose([x, got, want, diff!, scale!]);
      disposeParams(params);
      loaded.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('refuses group-norm encoders and missing tensors with exact messages', () => {
    const group = modelConfigSchema.parse({ arch: 'tiny', inputSize: 32, norm: 'group' });
    expect(() => buildEncoderLayersModel(group, initSharedWeights(group, 1))).toThrow(
      'the TF.js export supports batch-norm encoders only, this one uses group norm; use the safetensors export',
    );
    const config = tinyModelConfig(32);
    try {
      buildEncoderLayersModel(
        config,
        initSharedWeights(config, 1).filter((t) => t.name !== 'encoder.bn1.bias'),
      );
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
    }
  });
});
