import { z } from 'zod';
import { FedsslError } from '@fedssl/shared/errors';
import { modelConfigSchema, trainingConfigSchema } from '@fedssl/shared/model';
import { privacyConfigSchema } from '@fedssl/shared/privacy';
import { privacyIssues } from '../privacy/privacy-policy';
import { strategyConfigSchema } from '../strategies/config';

/** Largest update L2 norm accepted when a run does not set `maxUpdateNorm`. */
export const DEFAULT_MAX_UPDATE_NORM = 1e6;

/** What an operator fixes when creating a run (`POST /api/v1/runs`). */
export const runConfigSchema = z
  .object({
    name: z.string().min(1).max(128),
    rounds: z.number().int().min(1).max(100_000),
    minSites: z.number().int().min(1).max(10_000),
    roundDeadlineSeconds: z
      .number()
      .int()
      .min(1)
      .max(30 * 24 * 3600),
    /** A strategy name, or `{ name, …options, clipNorm? }` (see strategies/config.ts). */
    strategy: strategyConfigSchema.describe(
      'aggregation strategy: a name (every option at its default) or { name, …its options, clipNorm? }',
    ),
    model: modelConfigSchema,
    training: trainingConfigSchema,
    seed: z.number().int().min(0).max(0xffffffff),
    maxUpdateNorm: z.number().positive().max(1e12).default(DEFAULT_MAX_UPDATE_NORM),
    /** Sites whose last reported exampleCount is below this are not selected (0 = no minimum). */
    minExamples: z.number().int().min(0).max(1e9).default(0),
    /**
     * When an attempt of a round fails and the round is retried from the same base model, the
     * updates already accepted for it count in the new attempt and their sites are not asked to
     * train again (docs/operations.md). `false`: every attempt starts from no update.
     */
    reuseAcceptedUpdates: z.boolean().default(true),
    /** Differential privacy and secure aggregation (docs/privacy.md); absent: neither. */
    privacy: privacyConfigSchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    // zod runs this even when fields above failed; those are reported already, and the
    // privacy rules cannot be judged on invalid values (they would throw), so skip them then.
    let issues: ReturnType<typeof privacyIssues> = [];
    try {
      issues = privacyIssues(c);
    } catch {
      return;
    }
    for (const issue of issues) ctx.addIssue({ code: 'custom', ...issue });
  });
export type RunConfig = z.infer<typeof runConfigSchema>;
export type RunConfigInput = z.input<typeof runConfigSchema>;

/** `a.b.0: message; c: message` — the exact form the API returns for invalid bodies. */
export function formatIssues(issues: readonly { path: readonly PropertyKey[]; message: string }[]): string {
  return issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ');
}

/**
 * Validates a run configuration, filling in defaults.
 * @throws FedsslError RUN_CONFIG_INVALID listing every problem as `<path>: <issue>; …`.
 */
export function parseRunConfig(input: unknown): RunConfig {
  const parsed = runConfigSchema.safeParse(input);
  if (!parsed.success) throw new FedsslError('RUN_CONFIG_INVALID', formatIssues(parsed.error.issues));
  return parsed.data;
}

/**
 * Re-checks a stored configuration before its run starts (the privacy rules may be stricter
 * than when it was created).
 * @throws FedsslError RUN_CONFIG_INVALID listing every problem.
 */
export function assertStartable(config: RunConfig): void {
  const issues = privacyIssues(config);
  if (issues.length > 0) throw new FedsslError('RUN_CONFIG_INVALID', formatIssues(issues));
}
