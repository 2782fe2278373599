import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, it } from 'vitest';
import { isFedsslError } from '../../errors';
import { initSharedWeights } from '../init';
import type { ModelConfig } from '../config';
import { resnet18ModelConfig, tinyModelConfig } from '../presets';
import { featureDim, sharedParamSpecs } from '../spec';
import {
  buildEncoderLayersModel,
  createVariables,
  type EncoderLayersOptions,
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

/**
 * Builds, saves, reloads with the stock `tf.loadLayersModel` and compares with
 * `encoderForward` in inference mode on a `size`-pixel batch; returns the reloaded model's
 * layer class names.
 */
async function expectExportMatchesForward(
  config: ModelConfig,
  size: number,
  opts: EncoderLayersOptions = {},
): Promise<string[]> {
  const weights = weightsFor(config, 11);
  const dir = mkdtempSync(join(tmpdir(), 'fedssl-tfjs-'));
  const before = tf.memory().numTensors;
  const built = buildEncoderLayersModel(config, weights, opts);
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
  expect((await diff!.data())[0]!).toBeLessThan(1e-4);
  // The features are not trivially equal (e.g. all zero).
  expect((await scale!.data())[0]!).toBeGreaterThan(1e-3);
  const classes = loaded.layers.map((l) => l.getClassName());
  tf.dispose([x, got, want, diff!, scale!]);
  disposeParams(params);
  loaded.dispose();
  expect(tf.memory().numTensors).toBe(before);
  return classes;
}

/** Each export + reload + forward takes seconds idle, much longer under load. */
const EXPORT_TIMEOUT = 120_000;

describe('TF.js LayersModel export of the encoder', () => {
  const batch = (c: ModelConfig): ModelConfig => ({ ...c, norm: 'batch' });
  const group = (c: ModelConfig): ModelConfig => ({ ...c, norm: 'group' });

  for (const [label, config, size] of [
    ['tiny 32 (3×3 stem)', batch(tinyModelConfig(32)), 32],
    [
      'resnet18 small widths 96 (7×7 stem + max-pool, downsample)',
      batch(resnet18ModelConfig(96, [4, 4, 8, 8, 16])),
      96,
    ],
  ] as const) {
    it(
      `batch norm, saved to files and loaded back, gives encoderForward's inference features: ${label}`,
      async () => {
        const classes = await expectExportMatchesForward(config, size);
        expect(classes).toContain('BatchNormalization');
      },
      EXPORT_TIMEOUT,
    );
  }

  it(
    'batch norm: one graph takes any input size, the size option is not needed',
    async () => {
      // Built for the default 32 px, run at 48 px.
      await expectExportMatchesForward(batch(tinyModelConfig(32)), 48);
    },
    EXPORT_TIMEOUT,
  );

  // Widths with several channels per group (64 → 32 groups of 2, 96 → 32 of 3) so a wrong
  // channel order inside the grouping reshape would show.
  for (const [label, config, opts, size] of [
    ['tiny 32, default size', group(tinyModelConfig(32)), {}, 32],
    ['tiny 32 exported for 48 px', group(tinyModelConfig(32)), { inputSize: 48 }, 48],
    [
      'resnet18 widths [8,16,32,64,96] 96, default size',
      group(resnet18ModelConfig(96, [8, 16, 32, 64, 96])),
      {},
      96,
    ],
    [
      'resnet18 widths [8,16,32,64,96] 96 exported for 64 px',
      group(resnet18ModelConfig(96, [8, 16, 32, 64, 96])),
      { inputSize: 64 },
      64,
    ],
  ] as const) {
    it(
      `group norm from stock layers, saved and loaded back with tf.loadLayersModel, gives encoderForward's features: ${label}`,
      async () => {
        const classes = await expectExportMatchesForward(config, size, opts);
        expect(classes).not.toContain('BatchNormalization');
        expect(classes).toContain('LayerNormalization');
        expect(classes).toContain('DepthwiseConv2D');
      },
      EXPORT_TIMEOUT,
    );
  }

  it('group norm graph is built for its size: inputs of another size are refused by TF.js', () => {
    const config = group(tinyModelConfig(32));
    const model = buildEncoderLayersModel(config, initSharedWeights(config, 1), { inputSize: 48 });
    expect(model.inputs[0]!.shape).toEqual([null, 48, 48, 1]);
    const x = tf.zeros([1, 32, 32, 1]);
    expect(() => model.predict(x)).toThrow(/expected image to have shape \[null,48,48,1\]/);
    tf.dispose(x);
    model.dispose();
  });

  it('refuses a wrong input size and missing tensors with exact messages', () => {
    for (const norm of ['group', 'batch'] as const) {
      const config = { ...tinyModelConfig(32), norm };
      for (const inputSize of [8, 513, 32.5, Number.NaN]) {
        try {
          buildEncoderLayersModel(config, initSharedWeights(config, 1), { inputSize });
          expect.unreachable();
        } catch (e) {
          expect(isFedsslError(e, 'MODEL_CONFIG_INVALID')).toBe(true);
          expect((e as Error).message).toBe(
            `TF.js export input size must be an integer from 16 to 512 pixels, got ${String(inputSize)}`,
          );
        }
      }
    }
    const config = group(tinyModelConfig(32));
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
