import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { NamedTensors } from '@fedssl/shared/codec';
import type { ModelConfig } from '@fedssl/shared/model';
import { buildEncoderLayersModel, saveLayersModelToDir } from '@fedssl/shared/model/tf';

/**
 * Writes the TF.js LayersModel of the encoder (`model.json` + `weights.bin`) into `dir`.
 * Kept in its own module so that TensorFlow is only loaded (lazily, as CommonJS) when a
 * `tfjs` export is asked for.
 */
export async function writeTfjsEncoder(
  config: ModelConfig,
  weights: NamedTensors,
  dir: string,
  metadata: Record<string, unknown>,
): Promise<void> {
  if (tf.getBackend() !== 'cpu') await tf.setBackend('cpu');
  await tf.ready();
  const model = buildEncoderLayersModel(config, weights);
  try {
    await saveLayersModelToDir(model, dir, metadata);
  } finally {
    model.dispose();
  }
}
