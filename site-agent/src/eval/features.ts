import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensors } from '@fedssl/shared/codec';
import { featureDim, sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';
import { createVariables, disposeParams, encoderForward } from '@fedssl/shared/model/tf';
import type { TrainingDataset } from '../data/dataset';

/**
 * Frozen features for the linear probe: the encoder in inference mode (batch norm with
 * its running statistics), globally average-pooled, one row per image of `dataset`
 * (resized to the model's input size when the dataset has another size).
 * Returns `count × featureDim` row-major; leaks no tensors.
 */
export async function extractFeatures(
  model: ModelConfig,
  weights: NamedTensors,
  dataset: TrainingDataset,
  batchSize = 64,
): Promise<{ features: Float32Array; dim: number }> {
  const specs = sharedParamSpecs(model).filter((s) => s.part === 'encoder');
  const encoderWeights = weights.filter((t) => t.name.startsWith('encoder.'));
  const params = createVariables(encoderWeights, specs);
  const dim = featureDim(model);
  const out = new Float32Array(dataset.count * dim);
  const px = dataset.height * dataset.width;
  try {
    for (let start = 0; start < dataset.count; start += batchSize) {
      const n = Math.min(batchSize, dataset.count - start);
      const feats = tf.tidy(() => {
        let x: tf.Tensor4D = tf.tensor4d(dataset.pixels.subarray(start * px, (start + n) * px), [
          n,
          dataset.height,
          dataset.width,
          1,
        ]);
        if (dataset.height !== model.inputSize || dataset.width !== model.inputSize)
          x = tf.image.resizeBilinear(x, [model.inputSize, model.inputSize]);
        return encoderForward(model, params, x, { training: false });
      });
      out.set(await feats.data(), start * dim);
      feats.dispose();
    }
  } finally {
    disposeParams(params);
  }
  return { features: out, dim };
}
