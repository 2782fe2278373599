import { z } from 'zod';
import { signedModelManifestSchema, type SignedModelManifest } from '@fedssl/shared/protocol';
import type { ModelMark } from '../model-marks.repository';

/**
 * A published version as `GET /models` and `GET /models/:version` return it: the signed
 * manifest (verify `{manifest, signature, keyId}`, nothing else is signed) and whether its
 * weights can still be downloaded.
 */
export const modelVersionResponseSchema = signedModelManifestSchema.extend({
  weightsAvailable: z
    .boolean()
    .describe('false once the weights were deleted (retention); the signed manifest is kept either way'),
  prunedAt: z
    .string()
    .nullable()
    .describe(
      'when the retention policy deleted the weights; null while they are there, and for weights that went missing without a recorded prune (the next prune records them)',
    ),
});
export type ModelVersionResponse = z.output<typeof modelVersionResponseSchema>;

/** Pure mapper: the signed manifest, whether its weights file is there, and its retention mark. */
export function toModelVersionResponse(
  signed: SignedModelManifest,
  weightsAvailable: boolean,
  mark: Pick<ModelMark, 'prunedAt'> | undefined,
): ModelVersionResponse {
  return { ...signed, weightsAvailable, prunedAt: weightsAvailable ? null : (mark?.prunedAt ?? null) };
}
