import { z } from 'zod';

const clipNorm = z
  .number()
  .positive()
  .max(1e12)
  .optional()
  .describe('clip each update to this L2 norm before aggregating (absent: no clipping)');

export const STRATEGY_NAMES = ['fedavg', 'fedavgm', 'fedadam', 'median', 'trimmed-mean'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];
const UNKNOWN_STRATEGY = `expected one of ${STRATEGY_NAMES.join(', ')} or an object with such a name`;

/** Per-strategy options in a run config (`strategy: { name, …options, clipNorm? }`). */
export const strategyObjectSchema = z.discriminatedUnion(
  'name',
  [
    z.object({ name: z.literal('fedavg'), clipNorm }).strict(),
    z
      .object({
        name: z.literal('fedavgm'),
        serverLearningRate: z.number().positive().max(100).default(1).describe('server step size'),
        serverMomentum: z.number().min(0).lt(1).default(0.9).describe('server momentum'),
        clipNorm,
      })
      .strict(),
    z
      .object({
        name: z.literal('fedadam'),
        serverLearningRate: z.number().positive().max(100).default(0.01).describe('server step size'),
        beta1: z.number().min(0).lt(1).default(0.9).describe("server Adam's first-moment decay"),
        beta2: z.number().min(0).lt(1).default(0.99).describe("server Adam's second-moment decay"),
        tau: z
          .number()
          .positive()
          .max(1)
          .default(1e-3)
          .describe("server Adam's adaptivity τ (denominator offset)"),
        clipNorm,
      })
      .strict(),
    z.object({ name: z.literal('median'), clipNorm }).strict(),
    z
      .object({
        name: z.literal('trimmed-mean'),
        /** Fraction dropped on each side per coordinate. */
        beta: z.number().min(0).lt(0.5).default(0.1).describe('fraction dropped on each side per coordinate'),
        clipNorm,
      })
      .strict(),
  ],
  { error: () => UNKNOWN_STRATEGY },
);

/**
 * A run's `strategy`: a plain name (`'fedavg'`, every option at its default — the form
 * older runs were created with) or an object with the name and options.
 */
export const strategyConfigSchema = z.union([z.enum(STRATEGY_NAMES), strategyObjectSchema], {
  error: () => UNKNOWN_STRATEGY,
});
export type StrategyConfigInput = z.input<typeof strategyConfigSchema>;
export type StrategyConfigValue = z.output<typeof strategyConfigSchema>;
/** The normalized object form, every option filled in. */
export type StrategyConfig = z.output<typeof strategyObjectSchema>;

/**
 * The object form of a (validated or stored) strategy setting, defaults filled in.
 * @example normalizeStrategyConfig('fedavg') // { name: 'fedavg' }
 */
export function normalizeStrategyConfig(value: StrategyConfigInput | StrategyConfigValue): StrategyConfig {
  return strategyObjectSchema.parse(typeof value === 'string' ? { name: value } : value);
}
