import { z } from 'zod';
import { trainingConfigSchema } from '@fedssl/shared/model';
import { coordinatorKeysSchema } from '@fedssl/shared/protocol';

/*
 * The REST answers the admin CLI reads, checked for the fields it uses. Fields a newer
 * coordinator adds are ignored (z.object drops unknown keys), so this CLI keeps working
 * against the next release's server; a used field missing or of the wrong type is refused
 * with its path. The server-side schemas stay strict: they check what clients send.
 */

/** `GET /coordinator/keys`: the four fields a pull checks the fingerprint with. */
export const coordinatorKeysAnswer = z.object(coordinatorKeysSchema.shape);

/**
 * One entry of `GET /models` and the body of `GET /models/:version`. The signed manifest is kept
 * whole, unknown keys included: its signature covers every key, and the shared schema checks it
 * once verified.
 */
export const modelVersionAnswer = z.object({
  manifest: z.looseObject({ version: z.string(), createdAt: z.string() }),
  signature: z.string(),
  keyId: z.string(),
  /** Absent from coordinators released before retention reported it. */
  weightsAvailable: z.boolean().optional(),
  prunedAt: z.string().nullable().optional(),
});
export type ModelVersionAnswer = z.infer<typeof modelVersionAnswer>;

export const modelListAnswer = z.array(modelVersionAnswer);

/** `GET /runs/:id`, for the training settings of older manifests (settings added later are ignored). */
export const runTrainingAnswer = z.object({
  config: z.object({ training: z.object(trainingConfigSchema.shape) }),
});

/**
 * `GET /runs/:id` as `runs wait` reads it. Rounds and participants keep the fields they do not
 * name (`--json` prints each published round as the coordinator sent it).
 */
export const runDetailAnswer = z.object({
  id: z.string(),
  state: z.string(),
  reason: z.string().nullable().optional(),
  rounds: z.array(
    z.looseObject({
      round: z.number(),
      state: z.string(),
      modelVersion: z.string().nullable(),
      participants: z.array(
        z.looseObject({
          siteId: z.string(),
          siteName: z.string().nullable(),
          state: z.string(),
          exampleCount: z.number().nullable(),
          metrics: z.record(z.string(), z.number()).nullable(),
        }),
      ),
    }),
  ),
});
export type RunDetailAnswer = z.infer<typeof runDetailAnswer>;
