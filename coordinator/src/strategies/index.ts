import { FedsslError } from '@fedssl/shared/errors';
import { FedAvgStrategy } from './fedavg';
import type { Strategy, StrategyOptions } from './strategy';

export type { Strategy, StrategyOptions, StrategyUpdate } from './strategy';
export { FedAvgStrategy } from './fedavg';

/** Every strategy the coordinator knows, by name. Add one file per strategy and list it here. */
const STRATEGIES: Record<string, (options: StrategyOptions) => Strategy> = {
  fedavg: () => new FedAvgStrategy(),
};

/** Names accepted by {@link createStrategy}, for run-config validation. */
export const STRATEGY_NAMES = Object.keys(STRATEGIES) as readonly string[];

/**
 * A fresh strategy instance by name.
 * @throws FedsslError RUN_CONFIG_INVALID for an unknown name.
 * @example const s = createStrategy('fedavg'); s.begin(global); s.accumulate(u); s.finish();
 */
export function createStrategy(name: string, options: StrategyOptions = {}): Strategy {
  const factory = STRATEGIES[name];
  if (!factory) {
    throw new FedsslError(
      'RUN_CONFIG_INVALID',
      `unknown strategy "${name}"; known: ${STRATEGY_NAMES.join(', ')}`,
    );
  }
  return factory(options);
}
