import { z } from 'zod';

/** `POST /models/prune` body: dry run unless `dryRun: false`; `retain` overrides FEDSSL_RETAIN_VERSIONS. */
export const pruneModelsSchema = z.preprocess(
  (v) => (v === undefined || v === null ? {} : v),
  z
    .object({
      dryRun: z.boolean().default(true),
      retain: z.number().int().min(1).max(1_000_000).optional(),
    })
    .strict(),
);
export type PruneModelsDto = z.output<typeof pruneModelsSchema>;

/** `POST /models/:version/keep` body: set (`true`) or clear (`false`) the admin's keep mark. */
export const keepModelSchema = z.object({ keep: z.boolean() }).strict();
export type KeepModelDto = z.output<typeof keepModelSchema>;
