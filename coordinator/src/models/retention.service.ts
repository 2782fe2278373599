import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import type { AuditActor, AuditLog } from '../audit/audit-log';
import type { CoordinatorConfig } from '../config/config';
import { isoNow, type Clock } from '../config/clock';
import type { RoundEngineEvents } from '../runs/round-engine';
import type { RunRepository } from '../runs/run.repository';
import type { ModelMark, ModelMarksRepository } from './model-marks.repository';
import type { ModelStoreService } from './model-store.service';
import { planRetention, type RetentionDecision } from './retention';

/** Run states whose versions may still be needed (the next round starts from the latest). */
const ACTIVE_RUN_STATES = ['created', 'running', 'paused'] as const;

export interface PruneRequest {
  /** Default true: report what would be deleted, delete nothing. */
  dryRun: boolean;
  /** Versions to keep per run; default FEDSSL_RETAIN_VERSIONS. */
  retain?: number;
}

export interface PruneResult {
  dryRun: boolean;
  retain: number;
  /** Every version with its decision, oldest first within each run. */
  decisions: RetentionDecision[];
  /** Versions whose weights were (dry run: would be) deleted by this call. */
  pruned: string[];
  bytesFreed: number;
}

export interface RetentionDeps {
  config: CoordinatorConfig;
  models: ModelStoreService;
  marks: ModelMarksRepository;
  runs: RunRepository;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  /** Round engine events: with FEDSSL_RETAIN_VERSIONS > 0, every published round triggers a prune. */
  engineEvents?: {
    on(e: 'round', l: (ev: RoundEngineEvents['round'][0]) => void): unknown;
    off(e: 'round', l: (ev: RoundEngineEvents['round'][0]) => void): unknown;
  };
}

/**
 * Applies the retention policy ({@link planRetention}) to the model store: after each published
 * round when `FEDSSL_RETAIN_VERSIONS` is set, and on an admin's request (`POST /models/prune`,
 * dry run by default). Pruning deletes weights and exports, keeps manifests, records the
 * version as pruned in `model_marks` and writes one `model.pruned` audit entry per version.
 * Calls are serialised, so an automatic prune and an admin's never interleave.
 */
export class RetentionService {
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly onRound = (ev: RoundEngineEvents['round'][0]): void => {
    const retain = this.d.config.retainVersions ?? 0;
    if (ev.state !== 'published' || retain < 1) return;
    void this.prune({ dryRun: false, retain }, 'system').catch((e: unknown) =>
      this.log.error({ err: e, runId: ev.runId }, 'automatic model pruning failed'),
    );
  };

  constructor(private readonly d: RetentionDeps) {
    this.log = d.logger.child({ context: 'RetentionService' });
    d.engineEvents?.on('round', this.onRound);
  }

  stop(): void {
    this.d.engineEvents?.off('round', this.onRound);
  }

  /** Resolves when every queued prune or mark has finished (tests, shutdown). */
  async idle(): Promise<void> {
    let seen: Promise<unknown>;
    do {
      seen = this.queue;
      await seen.catch(() => undefined);
    } while (seen !== this.queue);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Plans (and unless `dryRun`, applies) the retention policy.
   * @throws FedsslError PROTOCOL_INVALID_MESSAGE when no `retain` is given and none is configured.
   */
  prune(req: PruneRequest, actor: AuditActor): Promise<PruneResult> {
    const retain = req.retain ?? this.d.config.retainVersions ?? 0;
    if (retain < 1) {
      return Promise.reject(
        new FedsslError(
          'PROTOCOL_INVALID_MESSAGE',
          'no retention configured: set FEDSSL_RETAIN_VERSIONS or pass "retain" (versions to keep per run, ≥ 1)',
        ),
      );
    }
    return this.serial(() => this.pruneNow(req.dryRun, retain, actor));
  }

  /**
   * Sets or clears the admin `keep` mark of a version (audited as `model.kept`).
   * @throws FedsslError MODEL_VERSION_NOT_FOUND
   */
  setKeep(version: string, keep: boolean, actor: AuditActor): Promise<ModelMark> {
    return this.serial(async () => {
      this.d.models.requireManifest(version);
      const at = isoNow(this.d.clock);
      await this.d.marks.db.transaction(async () => {
        await this.d.marks.setKeep(version, keep, actor, at);
        await this.d.audit.append(actor, 'model.kept', version, { keep });
      });
      return (await this.d.marks.get(version))!;
    });
  }

  private async referencedVersions(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const state of ACTIVE_RUN_STATES) {
      for (const run of await this.d.runs.listRuns(state)) {
        if (run.latestModelVersion) out.add(run.latestModelVersion);
        for (const r of await this.d.runs.listRounds(run.id)) {
          if (r.state !== 'published' && r.state !== 'failed') out.add(r.baseModelVersion);
        }
      }
    }
    return out;
  }

  private async pruneNow(dryRun: boolean, retain: number, actor: AuditActor): Promise<PruneResult> {
    const marks = new Map((await this.d.marks.list()).map((m) => [m.version, m]));
    const decisions = planRetention({
      versions: this.d.models.list().map(({ manifest: m }) => ({
        version: m.version,
        runId: m.runId,
        round: m.round,
        createdAt: m.createdAt,
        hasWeights: this.d.models.hasWeights(m.version),
        weightsBytes: m.weightsBytes,
      })),
      retain,
      marked: new Set([...marks.values()].filter((m) => m.keep).map((m) => m.version)),
      referenced: await this.referencedVersions(),
    });
    const toPrune = decisions.filter((d) => d.action === 'prune');
    let bytesFreed = 0;
    if (!dryRun) {
      for (const d of toPrune) {
        // Files first, then the mark: a crash in between leaves an unmarked version without
        // weights, which the next prune records (below) instead of a mark with weights still there.
        const freed = this.d.models.deleteWeights(d.version);
        bytesFreed += freed;
        await this.record(d, actor, retain, freed);
      }
      for (const d of decisions) {
        if (d.action === 'pruned' && !marks.get(d.version)?.prunedAt) await this.record(d, actor, retain, 0);
      }
      if (toPrune.length > 0) this.log.info({ retain, pruned: toPrune.length, bytesFreed }, 'models pruned');
    } else {
      bytesFreed = toPrune.reduce((n, d) => n + d.weightsBytes, 0);
    }
    return { dryRun, retain, decisions, pruned: toPrune.map((d) => d.version), bytesFreed };
  }

  private async record(
    d: RetentionDecision,
    actor: AuditActor,
    retain: number,
    freed: number,
  ): Promise<void> {
    const at = isoNow(this.d.clock);
    await this.d.marks.db.transaction(async () => {
      if (await this.d.marks.markPruned(d.version, actor, at, freed)) {
        await this.d.audit.append(actor, 'model.pruned', d.version, {
          runId: d.runId,
          round: d.round,
          retain,
          bytesFreed: freed,
        });
      }
    });
  }
}
