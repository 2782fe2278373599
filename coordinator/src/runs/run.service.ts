import { randomBytes } from 'node:crypto';
import { FedsslError } from '@fedssl/shared/errors';
import type { Clock } from './clock';
import type { SiteDirectory } from './ports';
import type { AuditActor } from '../audit/audit-log';
import type { AuditSink, RoundEngine } from './round-engine';
import { privacySpent } from '../privacy/privacy-report';
import { parseRunConfig } from './run-config';
import type { RunRepository } from './run.repository';
import type { ParticipantView, RunDetail, RunRecord, RoundView } from './run.types';

/** Creating, starting and reading runs; the state machine itself is RoundEngine's. */
export class RunService {
  constructor(
    private readonly repo: RunRepository,
    private readonly engine: RoundEngine,
    private readonly sites: SiteDirectory,
    private readonly clock: Clock,
    private readonly audit: AuditSink,
  ) {}

  /**
   * Creates a run in state `created` from an operator's request body.
   * @throws FedsslError RUN_CONFIG_INVALID with every problem as `<path>: <issue>; …`.
   */
  async create(body: unknown, actor: AuditActor = 'system'): Promise<RunRecord> {
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
    await this.repo.transaction(async () => {
      await this.repo.insertRun(run);
      await this.audit.append(actor, 'run.created', run.id, { name: run.name, rounds: config.rounds });
    });
    return run;
  }

  /** Starts a created run (publishes version 0, opens round 1). */
  start(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.engine.start(runId, actor);
  }

  /** Pauses a running run (see RoundEngine.pause). */
  pause(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.engine.pause(runId, actor);
  }

  /** Resumes a paused run. */
  resume(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.engine.resume(runId, actor);
  }

  /** Cancels a run that has not ended; outstanding tasks are cancelled at the agents. */
  cancel(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.engine.cancel(runId, actor);
  }

  list(): Promise<RunRecord[]> {
    return this.repo.listRuns();
  }

  /**
   * A run with every round attempt and its participants.
   * @throws FedsslError RUN_NOT_FOUND.
   */
  async get(runId: string): Promise<RunDetail> {
    const run = await this.repo.getRun(runId);
    if (!run) throw new FedsslError('RUN_NOT_FOUND', `run ${runId} does not exist`);
    const rounds: RoundView[] = [];
    for (const r of await this.repo.listRounds(runId)) {
      const updates = new Map(
        (await this.repo.listUpdates(runId, r.round, r.attempt)).map((u) => [u.taskId, u]),
      );
      const participants: ParticipantView[] = [];
      for (const t of await this.repo.listTasks(runId, r.round, r.attempt)) {
        const u = updates.get(t.id);
        participants.push({
          siteId: t.siteId,
          siteName: (await this.sites.get(t.siteId))?.name ?? null,
          state: t.state,
          exampleCount: u?.exampleCount ?? null,
          metrics: u?.metrics ?? null,
          reason: t.reason,
        });
      }
      // Updates carried into this attempt from an earlier one count here as accepted.
      const carried = await this.repo.listCarriedUpdates(runId, r.round, r.attempt);
      for (const u of carried) {
        participants.push({
          siteId: u.siteId,
          siteName: (await this.sites.get(u.siteId))?.name ?? null,
          state: 'accepted',
          exampleCount: u.exampleCount,
          metrics: u.metrics,
          reason: `carried over from attempt ${u.attempt}`,
        });
      }
      if (carried.length > 0)
        participants.sort((a, b) => (a.siteId < b.siteId ? -1 : a.siteId > b.siteId ? 1 : 0));
      rounds.push({
        round: r.round,
        attempt: r.attempt,
        state: r.state,
        startedAt: r.startedAt,
        deadline: r.deadline,
        publishedAt: r.publishedAt,
        modelVersion: r.modelVersion,
        modelSha256: r.modelSha256,
        reason: r.reason,
        participants,
      });
    }
    return { ...run, rounds, privacy: await privacySpent(this.repo, run) };
  }
}
