import { randomBytes } from 'node:crypto';
import { FedsslError } from '@fedssl/shared/errors';
import type { Clock } from './clock';
import type { SiteDirectory } from './ports';
import type { RoundEngine } from './round-engine';
import { parseRunConfig } from './run-config';
import type { RunRepository } from './run.repository';
import type { RunDetail, RunRecord, RoundView } from './run.types';

/** Creating, starting and reading runs; the state machine itself is RoundEngine's. */
export class RunService {
  constructor(
    private readonly repo: RunRepository,
    private readonly engine: RoundEngine,
    private readonly sites: SiteDirectory,
    private readonly clock: Clock,
  ) {}

  /**
   * Creates a run in state `created` from an operator's request body.
   * @throws FedsslError RUN_CONFIG_INVALID with every problem as `<path>: <issue>; …`.
   */
  create(body: unknown): RunRecord {
    const config = parseRunConfig(body);
    const now = new Date(this.clock.now()).toISOString();
    const run: RunRecord = {
      id: `run-${randomBytes(6).toString('hex')}`,
      name: config.name,
      state: 'created',
      config,
      currentRound: 0,
      initialModelVersion: null,
      latestModelVersion: null,
      createdAt: now,
      updatedAt: now,
      reason: null,
    };
    this.repo.insertRun(run);
    return run;
  }

  /** Starts a created run (publishes version 0, opens round 1). */
  start(runId: string): RunRecord {
    return this.engine.start(runId);
  }

  list(): RunRecord[] {
    return this.repo.listRuns();
  }

  /**
   * A run with every round attempt and its participants.
   * @throws FedsslError RUN_NOT_FOUND.
   */
  get(runId: string): RunDetail {
    const run = this.repo.getRun(runId);
    if (!run) throw new FedsslError('RUN_NOT_FOUND', `run ${runId} does not exist`);
    const rounds: RoundView[] = this.repo.listRounds(runId).map((r) => {
      const updates = new Map(this.repo.listUpdates(runId, r.round, r.attempt).map((u) => [u.taskId, u]));
      return {
        round: r.round,
        attempt: r.attempt,
        state: r.state,
        startedAt: r.startedAt,
        deadline: r.deadline,
        publishedAt: r.publishedAt,
        modelVersion: r.modelVersion,
        modelSha256: r.modelSha256,
        reason: r.reason,
        participants: this.repo.listTasks(runId, r.round, r.attempt).map((t) => {
          const u = updates.get(t.id);
          return {
            siteId: t.siteId,
            siteName: this.sites.get(t.siteId)?.name ?? null,
            state: t.state,
            exampleCount: u?.exampleCount ?? null,
            metrics: u?.metrics ?? null,
            reason: t.reason,
          };
        }),
      };
    });
    return { ...run, rounds };
  }
}
