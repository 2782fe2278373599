import { z } from 'zod';

/**
 * Differential privacy of each site's update (site-level): clip the whole shared delta to L2
 * norm `clipNorm`, add N(0, (noiseMultiplier·clipNorm)²) per coordinate; the coordinator's
 * accountant reports ε for `delta` over the rounds.
 */
export const dpConfigSchema = z
  .object({
    clipNorm: z.number().gt(0).max(1e6),
    /** σ: noise standard deviation as a multiple of `clipNorm`. */
    noiseMultiplier: z.number().gt(0).max(1e4),
    /** δ of the reported (ε, δ); should be well below 1 / (number of sites). */
    delta: z.number().gt(0).lt(1),
  })
  .strict();
export type DpConfig = z.infer<typeof dpConfigSchema>;

/** A run's privacy options, carried in every signed task. */
export const privacyConfigSchema = z
  .object({
    dp: dpConfigSchema.optional(),
    /** Pairwise-masked secure aggregation (FedAvg only): the coordinator learns only the sum. */
    secureAggregation: z.boolean().default(false),
  })
  .strict();
export type PrivacyConfig = z.infer<typeof privacyConfigSchema>;
export type PrivacyConfigInput = z.input<typeof privacyConfigSchema>;
