import { dpEpsilon, type DpConfig } from '@fedssl/shared/privacy';
import type { RunRepository } from '../runs/run.repository';
import type { RunRecord } from '../runs/run.types';

/** The privacy a DP run has spent so far, as reported by the run status API, log and audit. */
export interface PrivacySpent {
  mechanism: 'gaussian';
  /** The unit protected: all of one site's data in a round (site-level DP). */
  unit: 'site';
  clipNorm: number;
  noiseMultiplier: number;
  delta: number;
  /**
   * Noisy updates the most-asked site may have released: its answered tasks so far (accepted,
   * rejected, failed or dropped — each at most one update, the same one if resumed). Tasks
   * still open are counted once answered.
   */
  releases: number;
  /** ε of (ε, δ)-DP after `releases` compositions (RDP accountant, no subsampling credit). */
  epsilon: number;
  /** The RDP order that gave ε. */
  order: number | null;
}

/** (ε, δ) after `releases` noisy updates of one site under `dp`. */
export function epsilonAfter(dp: DpConfig, releases: number): PrivacySpent {
  const { epsilon, order } = dpEpsilon({
    noiseMultiplier: dp.noiseMultiplier,
    sampleRate: 1,
    steps: releases,
    delta: dp.delta,
  });
  return {
    mechanism: 'gaussian',
    unit: 'site',
    clipNorm: dp.clipNorm,
    noiseMultiplier: dp.noiseMultiplier,
    delta: dp.delta,
    releases,
    epsilon,
    order: Number.isNaN(order) ? null : order,
  };
}

/**
 * Privacy spent by a DP run (null for a run without DP). Counts, per site, every answered task
 * in any round attempt (a failed or dropped one may still have sent a noisy update, in part),
 * and reports the worst site. No amplification by sampling is claimed: sites are not sampled
 * at random.
 */
export async function privacySpent(repo: RunRepository, run: RunRecord): Promise<PrivacySpent | null> {
  const dp = run.config.privacy?.dp;
  if (!dp) return null;
  const perSite = new Map<string, number>();
  for (const r of await repo.listRounds(run.id)) {
    for (const t of await repo.listTasks(run.id, r.round, r.attempt))
      if (t.state !== 'offered') perSite.set(t.siteId, (perSite.get(t.siteId) ?? 0) + 1);
  }
  return epsilonAfter(dp, Math.max(0, ...perSite.values()));
}
