import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { isFedsslError } from '../../errors';
import { initSharedWeights } from '../init';
import { resnet18ModelConfig, tinyModelConfig } from '../presets';
import { featureDim, sharedParamSpecs } from '../spec';
import { createVariables, disposeParams, encoderForward, mlpForward, readWeights } from './index';

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

describe('tf forward', () => {
  for (const [label, preset, size] of [
    ['tiny 32', tinyModelConfig(32), 32],
    ['tiny local 16', tinyModelConfig(32), 16],
    ['resnet18 small widths 96 (7×7 stem + max-pool)', resnet18ModelConfig(96, [4, 4, 8, 8, 16]), 96],
  ] as const)
    for (const norm of ['group', 'batch'] as const) {
      const config = { ...preset, norm };
      it(`encoder and heads have the right shapes: ${label}, ${norm} norm`, () => {
        const specs = sharedParamSpecs(config);
        const before = tf.memory().numTensors;
        const params = createVariables(initSharedWeights(config, 1), specs);
        const [feat, proj, pred] = tf.tidy(() => {
          const x = tf.randomUniform([3, size, size, 1], 0, 1, 'float32', 5) as tf.Tensor4D;
          const f = encoderForward(config, params, x, { training: true });
          const z = mlpForward('projector', params, f, { training: true });
          const p = mlpForward('predictor', params, z, { training: true });
          return [f, z, p];
        });
        expect(feat.shape).toEqual([3, featureDim(config)]);
        expect(proj.shape).toEqual([3, config.projectionDim]);
        expect(pred.shape).toEqual([3, config.projectionDim]);
        expect(Array.from(feat.dataSync()).every(Number.isFinite)).toBe(true);
        tf.dispose([feat, proj, pred]);
        disposeParams(params);
        expect(tf.memory().numTensors).toBe(before);
      });
    }

  it('batch norm reports running statistics in training mode and uses them in inference mode', () => {
    const config = { ...tinyModelConfig(32), norm: 'batch' as const };
    const specs = sharedParamSpecs(config);
    const params = createVariables(initSharedWeights(config, 2), specs);
    const stats = new Map<string, tf.Tensor>();
    const x = tf.randomUniform([4, 32, 32, 1], 0, 1, 'float32', 9) as tf.Tensor4D;
    tf.tidy(() => {
      encoderForward(config, params, x, { training: true, statsOut: stats });
    });
    const bnCount = specs.filter((s) => s.name.endsWith('running_mean')).length;
    expect(stats.size).toBe(2 * bnCount);
    // Momentum 0.1 from mean 0: the new running mean is 0.1 × the batch mean, not 0.
    const rm = stats.get('encoder.bn1.running_mean')!.dataSync();
    expect(Array.from(rm).some((v) => Math.abs(v) > 1e-6)).toBe(true);
    // Nothing was mutated by the forward pass.
    expect(Array.from(params.get('encoder.bn1.running_mean')!.dataSync()).every((v) => v === 0)).toBe(true);
    const train = tf.tidy(() => encoderForward(config, params, x, { training: true }).dataSync());
    const infer = tf.tidy(() => encoderForward(config, params, x, { training: false }).dataSync());
    expect(Array.from(train)).not.toEqual(Array.from(infer));
    tf.dispose([...stats.values(), x]);
    disposeParams(params);
  });

  it('readWeights returns what createVariables was given', () => {
    const config = tinyModelConfig(32);
    const specs = sharedParamSpecs(config);
    const w = initSharedWeights(config, 3);
    const params = createVariables(w, specs);
    const back = readWeights(params, specs);
    disposeParams(params);
    expect(back.map((t) => t.name)).toEqual(w.map((t) => t.name));
    for (let i = 0; i < w.length; i++) expect(back[i]!.data).toEqual(w[i]!.data);
  });

  it('rejects weights whose shapes do not match with MODEL_WEIGHTS_MISMATCH', () => {
    const config = tinyModelConfig(32);
    const w = initSharedWeights(config, 3);
    w[0] = { ...w[0]!, shape: [1, 1, 1, 144], data: w[0]!.data };
    let err: unknown;
    try {
      createVariables(w, sharedParamSpecs(config));
    } catch (e) {
      err = e;
    }
    expect(isFedsslError(err, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
    expect((err as Error).message).toBe(
      "tensor 'encoder.conv1.weight' has shape [1,1,1,144], expected [3,3,1,16]",
    );
  });
});
