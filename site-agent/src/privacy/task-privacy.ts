import type { Logger } from 'pino';
import type { NamedTensors } from '@fedssl/shared/codec';
import { GaussianSampler, privatizeDelta, type DpApplied } from '@fedssl/shared/privacy';
import type { Task } from '@fedssl/shared/protocol';

/** What the agent did to a delta for the task's privacy options (recorded in the ledger). */
export interface PrivacyRecord {
  dp?: DpApplied;
}

/**
 * Applies the privacy options of a (verified, signed) task to the delta about to be sealed:
 * with `privacy.dp`, clip to C and add N(0, (σC)²) from the OS CSPRNG (or `sampler`, for
 * tests). Returns the delta unchanged and no record when the task asks for nothing.
 */
export function applyTaskPrivacy(
  task: Pick<Task, 'privacy'>,
  delta: NamedTensors,
  log: Logger,
  sampler?: GaussianSampler,
): { delta: NamedTensors; record: PrivacyRecord | null } {
  const dp = task.privacy?.dp;
  if (!dp) return { delta, record: null };
  const out = privatizeDelta(delta, dp, sampler ?? new GaussianSampler());
  // Norms and factors only: never tensor values.
  log.info(
    {
      clipNorm: dp.clipNorm,
      noiseMultiplier: dp.noiseMultiplier,
      clipped: out.applied.clipFactor < 1,
    },
    'differential privacy applied to the update',
  );
  return { delta: out.delta, record: { dp: out.applied } };
}
