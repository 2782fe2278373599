import { sharedParamSpecs, shapeSize, type ModelConfig } from '@fedssl/shared/model';
import { dpEpsilon, noiseNormBound, type PrivacyConfig } from '@fedssl/shared/privacy';
import { normalizeStrategyConfig, type StrategyConfigValue } from '../strategies/config';

/** What a run's privacy options are checked against (a subset of RunConfig). */
export interface PrivacyPolicyInput {
  rounds: number;
  minSites: number;
  strategy: StrategyConfigValue;
  model: ModelConfig;
  maxUpdateNorm: number;
  privacy?: PrivacyConfig | undefined;
}

/** Failure probability of the per-update noise-norm bound used to size `maxUpdateNorm`. */
const NOISE_BOUND_FAILURE = 1e-9;

/** Scalars in one update of `model` (the shared tensors). */
export function updateDimension(model: ModelConfig): number {
  return sharedParamSpecs(model).reduce((n, s) => n + shapeSize(s.shape), 0);
}

/**
 * Why a run's privacy options cannot work, as `path: message` problems ([] when they can):
 * - DP: the coordinator must not reject honest noisy updates, so `maxUpdateNorm` must cover
 *   C plus the noise-norm bound; and ε over the planned rounds must be finite.
 * - Secure aggregation: FedAvg without server-side clipping only. Robust strategies (median,
 *   trimmed mean), server clipping and server optimizers that look at single updates need each
 *   site's update, which secure aggregation exists to hide.
 */
export function privacyIssues(c: PrivacyPolicyInput): { path: string[]; message: string }[] {
  const issues: { path: string[]; message: string }[] = [];
  const dp = c.privacy?.dp;
  if (dp) {
    const bound =
      dp.clipNorm +
      noiseNormBound(updateDimension(c.model), dp.clipNorm * dp.noiseMultiplier, NOISE_BOUND_FAILURE);
    if (c.maxUpdateNorm < bound) {
      issues.push({
        path: ['maxUpdateNorm'],
        message: `${c.maxUpdateNorm} would reject honest DP updates: clipNorm plus noise reaches ${bound.toPrecision(6)} for this model; raise it or lower the noise`,
      });
    }
    const { epsilon } = dpEpsilon({
      noiseMultiplier: dp.noiseMultiplier,
      sampleRate: 1,
      steps: c.rounds,
      delta: dp.delta,
    });
    if (!Number.isFinite(epsilon)) {
      issues.push({
        path: ['privacy', 'dp', 'noiseMultiplier'],
        message: `gives no finite ε over ${c.rounds} rounds at δ=${dp.delta}; raise it`,
      });
    }
  }
  if (c.privacy?.secureAggregation) {
    if (c.minSites < 2)
      issues.push({
        path: ['minSites'],
        message: 'secure aggregation needs at least 2 sites per round (a sum of one is the update)',
      });
    const s = normalizeStrategyConfig(c.strategy);
    if (s.name !== 'fedavg' || s.clipNorm !== undefined) {
      issues.push({
        path: ['strategy'],
        message: `secure aggregation supports fedavg without server clipping only (the coordinator sees just the sum, and ${s.name}${s.clipNorm !== undefined ? '+clip' : ''} needs each update); clip on the sites with privacy.dp instead`,
      });
    }
  }
  return issues;
}
