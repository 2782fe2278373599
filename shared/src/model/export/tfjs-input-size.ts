import { FedsslError } from '../../errors';
import type { ModelConfig } from '../config';

/** Bounds of the TF.js export's input size (those of `ModelConfig.inputSize`). */
export const TFJS_MIN_INPUT_SIZE = 16;
export const TFJS_MAX_INPUT_SIZE = 512;

/**
 * The input side a TF.js export is built for: `inputSize`, else `config.inputSize`. Kept
 * apart from the TF.js code so that callers can check a requested size without loading
 * TensorFlow.
 * @throws FedsslError MODEL_CONFIG_INVALID when `inputSize` is not an integer in [16, 512].
 */
export function tfjsExportInputSize(config: ModelConfig, inputSize?: number): number {
  if (inputSize === undefined) return config.inputSize;
  if (!Number.isInteger(inputSize) || inputSize < TFJS_MIN_INPUT_SIZE || inputSize > TFJS_MAX_INPUT_SIZE) {
    throw new FedsslError(
      'MODEL_CONFIG_INVALID',
      `TF.js export input size must be an integer from ${TFJS_MIN_INPUT_SIZE} to ${TFJS_MAX_INPUT_SIZE} pixels, got ${String(inputSize)}`,
    );
  }
  return inputSize;
}
