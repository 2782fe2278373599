import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { sha256Hex } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { modelConfigSchema, sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';

/** An encoder read from a model folder. */
export interface EncoderFile {
  model: ModelConfig;
  weights: NamedTensors;
  version: string;
  sha256: string;
  /** True for a coordinator-published (signed) manifest; false for train-local output. */
  signed: boolean;
}

/**
 * Read `<dir>/manifest.json` + `<dir>/weights.fsw` as written by the coordinator's model
 * store or by `train-local`, and check the weights against the manifest's SHA-256 and the
 * architecture's parameter names and shapes. (The signature of a published model is
 * checked where the coordinator's key is pinned, not here.)
 * @throws FedsslError MODEL_CONFIG_INVALID, MODEL_HASH_MISMATCH, MODEL_WEIGHTS_MISMATCH, CODEC_*.
 */
export async function readEncoderDir(dir: string): Promise<EncoderFile> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  } catch (e) {
    throw new FedsslError(
      'MODEL_CONFIG_INVALID',
      `cannot read ${join(dir, 'manifest.json')}: ${(e as Error).message}`,
    );
  }
  const file = raw as {
    manifest?: { model?: unknown; weightsSha256?: unknown; version?: unknown };
    signature?: unknown;
  };
  const parsed = modelConfigSchema.safeParse(file.manifest?.model);
  if (!parsed.success) {
    throw new FedsslError('MODEL_CONFIG_INVALID', `${join(dir, 'manifest.json')} has no valid model config`);
  }
  const bytes = new Uint8Array(await readFile(join(dir, 'weights.fsw')));
  const sha256 = sha256Hex(bytes);
  if (sha256 !== file.manifest?.weightsSha256) {
    throw new FedsslError(
      'MODEL_HASH_MISMATCH',
      `weights.fsw in ${dir} does not match the manifest's SHA-256`,
    );
  }
  const { tensors } = decodeWeights(bytes, sharedParamSpecs(parsed.data));
  return {
    model: parsed.data,
    weights: tensors,
    version: typeof file.manifest?.version === 'string' ? file.manifest.version : 'unknown',
    sha256,
    signed: typeof file.signature === 'string',
  };
}
