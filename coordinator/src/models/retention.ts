/** One published version as the retention policy sees it. */
export interface RetentionVersion {
  version: string;
  runId: string | null;
  round: number;
  createdAt: string;
  /** False once its weights were deleted (already pruned). */
  hasWeights: boolean;
  weightsBytes: number;
}

/** Why a version's weights stay. */
export type KeepReason = 'latest-of-run' | 'within-last-n' | 'marked-keep' | 'active-run';

export interface RetentionDecision {
  version: string;
  runId: string | null;
  round: number;
  /** `keep`: weights stay; `prune`: weights go; `pruned`: already gone (nothing to do). */
  action: 'keep' | 'prune' | 'pruned';
  reasons: KeepReason[];
  weightsBytes: number;
}

export interface RetentionInput {
  versions: readonly RetentionVersion[];
  /** Keep the last `retain` versions of each run (≥ 1). */
  retain: number;
  /** Versions an admin marked `keep`. */
  marked: ReadonlySet<string>;
  /** Versions an active (created, running, paused) run still needs: its latest, bases of unfinished rounds. */
  referenced: ReadonlySet<string>;
}

/**
 * The retention policy, as a pure function: per run (run-less versions form one group),
 * versions ordered by round then publication time; the last `retain` and always the latest
 * keep their weights, and so does any version marked `keep` or referenced by an active run.
 * Every other version with weights is pruned. Manifests are never pruned, so the parent-hash
 * chain stays verifiable. Decisions come oldest first within each run, runs in first-seen order.
 * @example planRetention({ versions, retain: 3, marked: new Set(), referenced: new Set() })
 */
export function planRetention(input: RetentionInput): RetentionDecision[] {
  if (!Number.isInteger(input.retain) || input.retain < 1) {
    throw new RangeError(`retain must be an integer ≥ 1, got ${input.retain}`);
  }
  const byRun = new Map<string | null, RetentionVersion[]>();
  for (const v of input.versions) {
    const group = byRun.get(v.runId) ?? [];
    group.push(v);
    byRun.set(v.runId, group);
  }
  const out: RetentionDecision[] = [];
  for (const group of byRun.values()) {
    group.sort(
      (a, b) =>
        a.round - b.round || a.createdAt.localeCompare(b.createdAt) || a.version.localeCompare(b.version),
    );
    group.forEach((v, i) => {
      const fromEnd = group.length - 1 - i;
      const reasons: KeepReason[] = [];
      if (fromEnd === 0) reasons.push('latest-of-run');
      else if (fromEnd < input.retain) reasons.push('within-last-n');
      if (input.marked.has(v.version)) reasons.push('marked-keep');
      if (input.referenced.has(v.version)) reasons.push('active-run');
      const action = !v.hasWeights ? 'pruned' : reasons.length > 0 ? 'keep' : 'prune';
      out.push({
        version: v.version,
        runId: v.runId,
        round: v.round,
        action,
        reasons,
        weightsBytes: v.weightsBytes,
      });
    });
  }
  return out;
}
