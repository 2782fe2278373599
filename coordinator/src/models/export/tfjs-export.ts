import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { NamedTensors } from '@fedssl/shared/codec';
import type { ModelConfig } from '@fedssl/shared/model';
import { buildEncoderLayersModel, saveLayersModelToDir } from '@fedssl/shared/model/tf';

/**
 * Writes the TF.js LayersModel of the encoder (`model.json` + `weights.bin`) into `dir`,
 * built for `inputSize` px (default `config.inputSize`; see `buildEncoderLayersModel`).
 * Kept in its own module so that TensorFlow is only loaded (lazily, as CommonJS) when a
 * `tfjs` export is asked for.
 */
export async function writeTfjsEncoder(
  config: ModelConfig,
  weights: NamedTensors,
  dir: string,
  metadata: Record<string, unknown>,
  inputSize?: number,
): Promise<void> {
  if (tf.getBackend() !== 'cpu') await tf.setBackend('cpu');
  await tf.ready();
  const model = buildEncoderLayersModel(config, weights, { inputSize });
  try {
    await saveLayersModelToDir(model, dir, metadata);
  } finally {
    model.dispose();
  }
}
