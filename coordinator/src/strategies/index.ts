import { FedsslError } from '@fedssl/shared/errors';
import { ClippingStrategy } from './clipping';
import {
  STRATEGY_NAMES,
  strategyObjectSchema,
  type StrategyConfig,
  type StrategyConfigInput,
} from './config';
import { FedAdamStrategy } from './fedadam';
import { FedAvgStrategy } from './fedavg';
import { FedAvgMStrategy } from './fedavgm';
import { MedianStrategy } from './median';
import type { Strategy } from './strategy';
import { TrimmedMeanStrategy } from './trimmed-mean';

export type { AggregationInput, AggregationOutput, Strategy, UpdateSource } from './strategy';
export {
  STRATEGY_NAMES,
  normalizeStrategyConfig,
  strategyConfigSchema,
  type StrategyConfig,
  type StrategyConfigInput,
  type StrategyConfigValue,
  type StrategyName,
} from './config';
export { FedAvgStrategy, weightedMeanDelta } from './fedavg';
export { FedAvgMStrategy } from './fedavgm';
export { FedAdamStrategy } from './fedadam';
export { MedianStrategy } from './median';
export { TrimmedMeanStrategy } from './trimmed-mean';
export { ClippingStrategy, clipToNorm } from './clipping';

/** Every strategy the coordinator knows, by name. Add one file per strategy and list it here. */
const STRATEGIES: { [K in StrategyConfig['name']]: (c: Extract<StrategyConfig, { name: K }>) => Strategy } = {
  fedavg: () => new FedAvgStrategy(),
  fedavgm: (c) => new FedAvgMStrategy(c),
  fedadam: (c) => new FedAdamStrategy(c),
  median: () => new MedianStrategy(),
  'trimmed-mean': (c) => new TrimmedMeanStrategy(c),
};

/**
 * A fresh strategy from a run's `strategy` setting (plain name or `{ name, …options,
 * clipNorm? }`); with `clipNorm` the strategy is wrapped in {@link ClippingStrategy}.
 * @throws FedsslError RUN_CONFIG_INVALID for an unknown name or invalid options.
 * @example createStrategy({ name: 'trimmed-mean', beta: 0.2, clipNorm: 10 }).aggregate(input)
 */
export function createStrategy(setting: StrategyConfigInput | string): Strategy {
  const name = typeof setting === 'string' ? setting : setting.name;
  if (!(STRATEGY_NAMES as readonly string[]).includes(name)) {
    throw new FedsslError(
      'RUN_CONFIG_INVALID',
      `unknown strategy "${name}"; known: ${STRATEGY_NAMES.join(', ')}`,
    );
  }
  const parsed = strategyObjectSchema.safeParse(typeof setting === 'string' ? { name } : setting);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.map(String).join('.')}: ${i.message}`);
    throw new FedsslError('RUN_CONFIG_INVALID', `strategy "${name}": ${issues.join('; ')}`);
  }
  const config = parsed.data;
  const factory = STRATEGIES[config.name] as (c: StrategyConfig) => Strategy;
  const strategy = factory(config);
  return config.clipNorm === undefined ? strategy : new ClippingStrategy(strategy, config.clipNorm);
}

/** The label a strategy setting is recorded under in model manifests (e.g. `median+clip`). */
export function strategyLabel(setting: StrategyConfigInput | string): string {
  return createStrategy(setting).name;
}
