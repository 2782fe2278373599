import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { signTask, toBase64 } from '@fedssl/shared/crypto';
import { FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import { initSharedWeights } from '@fedssl/shared/model';
import type { NamedTensors } from '@fedssl/shared/codec';
import type { ModelHyperparameters, Task, UpdateHeader } from '@fedssl/shared/protocol';
import { strategyLabel, type UpdateSource } from '../strategies';
import { normalizeStrategyConfig } from '../strategies/config';
import { aggregateRound } from '../strategies/aggregate-round';
import type { AgentTransport } from '../transport/agent-transport';
import { decodeDelta, openEnvelopeFile, type UpdateStore } from '../uploads/update-store';
import type { AuditActor, AuditAction } from '../audit/audit-log';
import type { CancelTimer, Clock } from './clock';
import type { KeyHolder, ModelPublisher, PresenceEvents, SiteDirectory } from './ports';
import type { RunRepository } from './run.repository';
import {
  MAX_ROUND_ATTEMPTS,
  type RoundRow,
  type RoundState,
  type RunRecord,
  type RunState,
  type TaskRow,
  type UpdateRow,
} from './run.types';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { privacySpent } from '../privacy/privacy-report';
import { SecAggSessions, type MaskedUpload } from '../privacy/secagg-sessions';
import { faultPoint } from '../faults/fault-hook';
import { isOutOfSpace } from '../faults/storage-full';
import { assertStartable } from './run-config';

/** Where the engine appends its audit entries (the AuditLog satisfies it). */
export interface AuditSink {
  append(
    actor: AuditActor,
    action: AuditAction,
    target: string,
    details?: Record<string, unknown>,
  ): Promise<unknown>;
}

/** Everything the engine talks to, injected (see runs.module.ts for the Nest wiring). */
export interface RoundEngineDeps {
  repo: RunRepository;
  transport: AgentTransport;
  sites: SiteDirectory;
  presence: PresenceEvents;
  models: ModelPublisher;
  keys: KeyHolder;
  updates: UpdateStore;
  clock: Clock;
  logger: Logger;
  audit: AuditSink;
}

/**
 * Domain events, emitted after the transition is persisted (the console notifier turns them
 * into socket messages): `'run'` when a run changes state, `'round'` when a round does.
 */
export interface RoundEngineEvents {
  run: [event: { runId: string; state: RunState }];
  round: [event: { runId: string; round: number; attempt: number; state: RoundState }];
  /** One aggregation attempt finished (metrics): wall time of fold-and-publish, and whether it succeeded. */
  aggregation: [event: { runId: string; round: number; seconds: number; ok: boolean }];
}

/** Global model version name of a run's round (round 0 = initial weights). */
export function modelVersionOf(runId: string, round: number): string {
  return `${runId}.r${round}`;
}

/** How the reason of a round attempt that failed in aggregation begins. */
const AGGREGATION_FAILED = 'aggregation failed: ';

/** How a carried (or not carried) update is named in the audit log: no payload, no paths. */
function carriedRef(u: UpdateRow): { siteId: string; updateId: string; acceptedInAttempt: number } {
  return { siteId: u.siteId, updateId: u.id, acceptedInAttempt: u.attempt };
}

/** The run settings a published manifest carries (signed): training, strategy with its options, seed. */
function runHyperparameters(run: RunRecord): ModelHyperparameters {
  return {
    training: { ...run.config.training },
    strategy: { ...normalizeStrategyConfig(run.config.strategy) },
    seed: run.config.seed,
  };
}

/**
 * The persisted round state machine (ARCHITECTURE.md §2):
 *   run:   created → running → (paused ⇄ running) → completed | cancelled | failed
 *   round: open → training → aggregating → published   (or → failed, retried as a new attempt)
 * A retried attempt keeps the updates accepted earlier in its round when they were trained from
 * its base model ({@link carryPlan}): they count toward its quorum, are aggregated once, and
 * their sites get no new task; an attempt whose carried updates alone make the quorum and that
 * has no other site to ask goes from `open` straight to `aggregating`.
 * Every transition is written to the store before it is acted on, so {@link resumeAll}
 * after a restart continues from the store alone. In-memory state is limited to timers
 * and "waiting for sites" flags, both rebuilt by resume.
 *
 * Store calls are async, so each run's transitions are serialised by a per-run lock
 * ({@link exclusive}): two answers arriving together cannot both aggregate a round. Public
 * methods take the lock; private ones assume it is held.
 *
 * Pause stops the run from moving on: a round already training keeps collecting (and is
 * aggregated when complete), but no round is opened, retried or completed until resume.
 *
 * Several runs at once: a site trains one task at a time, so a site with an unanswered task
 * of another run is not selected ("busy"); the run waits in its open round until enough
 * free sites are online and is re-tried whenever a task anywhere is answered.
 */
export class RoundEngine {
  private readonly log: Logger;
  private readonly deadlines = new Map<string, CancelTimer>();
  /** Runs whose aggregation waits for disk space: the retry timer and the retries so far. */
  private readonly deferred = new Map<string, { cancel: CancelTimer; retries: number }>();
  /** Runs whose open round waits for sites, with the online count last logged. */
  private readonly waiting = new Map<string, number>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Fire-and-forget work (events, timers) still running; see {@link idle}. */
  private readonly pending = new Set<Promise<unknown>>();
  private readonly onOnline = (siteId: string): void =>
    this.background(this.siteOnline(siteId), 'site online');
  private readonly onRevoked = (siteId: string): void =>
    this.background(this.siteRevoked(siteId), 'site revoked');
  private stopped = false;
  /** Secure-aggregation sessions of training rounds (in memory; see SecAggSessions). */
  private readonly secagg: SecAggSessions;
  /** See {@link RoundEngineEvents}. */
  readonly events = new EventEmitter<RoundEngineEvents>();

  constructor(private readonly d: RoundEngineDeps) {
    this.log = d.logger.child({ context: 'RoundEngine' });
    this.secagg = new SecAggSessions(this.log);
    d.presence.on('online', this.onOnline);
    d.presence.on('revoked', this.onRevoked);
  }

  /** Stops timers and listeners (module shutdown, tests). Persisted state is untouched. */
  stop(): void {
    this.stopped = true;
    this.d.presence.off('online', this.onOnline);
    this.d.presence.off('revoked', this.onRevoked);
    for (const cancel of this.deadlines.values()) cancel();
    this.deadlines.clear();
    for (const d of this.deferred.values()) d.cancel();
    this.deferred.clear();
    this.waiting.clear();
  }

  /** Resolves once every queued transition has run (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.locks.size > 0 || this.pending.size > 0)
      await Promise.allSettled([...this.locks.values(), ...this.pending]);
  }

  /** Runs `fn` after every earlier transition of the same run has finished. */
  private exclusive<T>(runId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(runId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(runId, settled);
    void settled.then(() => {
      if (this.locks.get(runId) === settled) this.locks.delete(runId);
    });
    return next;
  }

  /** Fire-and-forget work from events and timers: errors are logged, never thrown at an emitter. */
  private background(p: Promise<unknown>, what: string): void {
    const tracked = p.catch((e: unknown) =>
      this.log.error({ err: e }, `${what}: could not update run state`),
    );
    this.pending.add(tracked);
    void tracked.then(() => this.pending.delete(tracked));
  }

  private iso(): string {
    return new Date(this.d.clock.now()).toISOString();
  }

  private async getRun(runId: string): Promise<RunRecord> {
    const run = await this.d.repo.getRun(runId);
    if (!run) throw new FedsslError('RUN_NOT_FOUND', `run ${runId} does not exist`);
    return run;
  }

  // ------------------------------------------------------------------ run lifecycle

  /**
   * Starts a created run: publishes version 0 from the run's seed and opens round 1.
   * @throws FedsslError RUN_NOT_FOUND; RUN_INVALID_STATE unless the run is `created`.
   */
  start(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.exclusive(runId, async () => {
      assertStartable((await this.getRun(runId)).config);
      await this.transition(runId, ['created'], 'running', 'run.started', actor, (s) =>
        s === 'paused'
          ? `run ${runId} is paused; resume it instead of starting it`
          : `run ${runId} is ${s}; only a created run can be started`,
      );
      this.log.info({ runId }, 'run started');
      await this.advance(runId);
      return this.getRun(runId);
    });
  }

  /**
   * Pauses a running run: no new round or task until {@link resume}; a round already training
   * keeps collecting updates.
   * @throws FedsslError RUN_NOT_FOUND; RUN_INVALID_STATE unless the run is `running`.
   */
  pause(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.exclusive(runId, async () => {
      await this.transition(
        runId,
        ['running'],
        'paused',
        'run.paused',
        actor,
        (s) => `run ${runId} is ${s}; only a running run can be paused`,
      );
      this.waiting.delete(runId);
      this.log.info({ runId }, 'run paused');
      return this.getRun(runId);
    });
  }

  /**
   * Resumes a paused run where it stopped.
   * @throws FedsslError RUN_NOT_FOUND; RUN_INVALID_STATE unless the run is `paused`.
   */
  resume(runId: string, actor: AuditActor = 'system'): Promise<RunRecord> {
    return this.exclusive(runId, async () => {
      await this.transition(
        runId,
        ['paused'],
        'running',
        'run.resumed',
        actor,
        (s) => `run ${runId} is ${s}; only a paused run can be resumed`,
      );
      this.log.info({ runId }, 'run resumed');
      await this.advance(runId, false);
      return this.getRun(runId);
    });
  }

  /**
   * Cancels a run that has not ended: its open round fails with "run cancelled", its
   * unanswered tasks are dropped (persisted first) and their agents told to stop.
   * @throws FedsslError RUN_NOT_FOUND; RUN_INVALID_STATE for a completed, cancelled or failed run.
   */
  cancel(
    runId: string,
    actor: AuditActor = 'system',
    reason = 'cancelled by an operator',
  ): Promise<RunRecord> {
    return this.exclusive(runId, async () => {
      const open = await this.d.repo.transaction(async () => {
        await this.transition(
          runId,
          ['created', 'running', 'paused'],
          'cancelled',
          'run.cancelled',
          actor,
          (s) => `run ${runId} is ${s}; only a created, running or paused run can be cancelled`,
          reason,
        );
        const round = await this.d.repo.latestRound(runId);
        if (!round || !['open', 'training', 'aggregating'].includes(round.state)) return [];
        const tasks = (await this.d.repo.listTasks(runId, round.round, round.attempt)).filter(
          (t) => t.state === 'offered',
        );
        for (const t of tasks) await this.d.repo.answerTask(t.id, 'dropped', 'run cancelled', this.iso());
        await this.d.repo.updateRound(runId, round.round, round.attempt, {
          state: 'failed',
          reason: 'run cancelled',
        });
        return tasks;
      });
      this.deadlines.get(runId)?.();
      this.deadlines.delete(runId);
      this.waiting.delete(runId);
      for (const t of open) this.d.transport.cancelTask(t.siteId, t.id, 'run cancelled');
      this.log.info({ runId, droppedTasks: open.length }, 'run cancelled');
      this.events.emit('run', { runId, state: 'cancelled' });
      this.kickWaiting(runId);
      return this.getRun(runId);
    });
  }

  /** Compare-and-set of the run state with its audit entry, in one transaction. */
  private async transition(
    runId: string,
    from: readonly RunState[],
    to: RunState,
    action: AuditAction,
    actor: AuditActor,
    illegal: (state: RunState) => string,
    reason: string | null = null,
  ): Promise<void> {
    await this.d.repo.transaction(async () => {
      const run = await this.getRun(runId);
      if (!from.includes(run.state)) throw new FedsslError('RUN_INVALID_STATE', illegal(run.state));
      if (!(await this.d.repo.transitionRun(runId, from, to, reason, this.iso()))) {
        throw new FedsslError('RUN_INVALID_STATE', illegal((await this.getRun(runId)).state));
      }
      await this.d.audit.append(actor, action, runId, reason === null ? {} : { reason });
    });
    if (to !== 'cancelled') this.events.emit('run', { runId, state: to });
  }

  /** Resumes every run that was running when the coordinator stopped. */
  async resumeAll(): Promise<void> {
    for (const run of await this.d.repo.listRuns('running')) {
      this.log.info({ runId: run.id, round: run.currentRound }, 'resuming run');
      try {
        await this.exclusive(run.id, () => this.advance(run.id));
      } catch (e) {
        this.log.error({ runId: run.id, err: e }, 'could not resume run');
      }
    }
  }

  /**
   * Moves a running run forward from whatever its persisted state is. Idempotent: calling
   * it again in the same state does nothing new (used by start, resume and restart).
   * `reoffer`: send outstanding tasks again (after a restart the agents may not have them).
   */
  private async advance(runId: string, reoffer = true): Promise<void> {
    if (this.stopped) return;
    const run = await this.getRun(runId);
    if (run.state !== 'running') return;
    if (run.initialModelVersion === null) {
      await this.publishInitial(run);
      return this.advance(runId, reoffer);
    }
    const round = await this.d.repo.latestRound(runId);
    if (!round) {
      await this.openRound(await this.getRun(runId), 1, 1);
      return;
    }
    switch (round.state) {
      case 'open':
        return this.trySelect(runId);
      case 'training':
        return this.resumeTraining(run, round, reoffer);
      case 'aggregating':
        return this.aggregate(runId, round);
      case 'published':
        return this.afterPublished(run, round);
      case 'failed':
        return this.afterFailed(run, round);
    }
  }

  private async publishInitial(run: RunRecord): Promise<void> {
    const version = modelVersionOf(run.id, 0);
    const existing = this.d.models.getManifest(version);
    if (!existing) {
      this.d.models.publish({
        version,
        runId: run.id,
        round: 0,
        model: run.config.model,
        weights: initSharedWeights(run.config.model, run.config.seed),
        parentVersion: null,
        parentSha256: null,
        sites: [],
        strategy: strategyLabel(run.config.strategy),
        hyperparameters: runHyperparameters(run),
      });
    }
    await this.d.repo.updateRun(
      run.id,
      { initialModelVersion: version, latestModelVersion: version },
      this.iso(),
    );
    this.log.info({ runId: run.id, version }, 'initial model published');
  }

  private async openRound(run: RunRecord, round: number, attempt: number): Promise<void> {
    const base = run.latestModelVersion;
    const manifest = base === null ? undefined : this.d.models.getManifest(base);
    if (!base || !manifest)
      throw new FedsslError('MODEL_VERSION_NOT_FOUND', `base model of run ${run.id} is missing`);
    const baseSha256 = manifest.manifest.weightsSha256;
    const plan = await this.carryPlan(run, round, attempt, baseSha256);
    const now = this.iso();
    // The new attempt and what it carries over are one transaction: a crash leaves both or neither.
    await this.d.repo.transaction(async () => {
      await this.d.repo.insertRound({
        runId: run.id,
        round,
        attempt,
        state: 'open',
        startedAt: now,
        deadline: null,
        publishedAt: null,
        baseModelVersion: base,
        baseModelSha256: baseSha256,
        modelVersion: null,
        modelSha256: null,
        reason: null,
      });
      await this.d.repo.updateRun(run.id, { currentRound: round }, now);
      for (const u of plan.carry) {
        await this.d.repo.insertCarriedUpdate({
          runId: run.id,
          round,
          attempt,
          siteId: u.siteId,
          updateId: u.id,
          carriedAt: now,
        });
      }
      if (plan.carry.length > 0)
        await this.d.audit.append('system', 'round.updates-carried', run.id, {
          round,
          attempt,
          updates: plan.carry.map(carriedRef),
        });
      for (const d of plan.notCarried)
        await this.d.audit.append('system', 'round.updates-not-carried', run.id, {
          round,
          attempt,
          reason: d.reason,
          updates: d.updates.map(carriedRef),
        });
    });
    if (plan.carry.length > 0)
      this.log.info(
        { runId: run.id, round, attempt, carried: plan.carry.length, sites: plan.carry.map((u) => u.siteId) },
        'accepted updates carried over',
      );
    for (const d of plan.notCarried)
      this.log.warn(
        {
          runId: run.id,
          round,
          attempt,
          reason: d.reason,
          updates: d.updates.length,
          sites: d.updates.map((u) => u.siteId),
        },
        'accepted updates not carried over',
      );
    this.log.info({ runId: run.id, round, attempt }, 'round open');
    this.events.emit('round', { runId: run.id, round, attempt, state: 'open' });
    await this.trySelect(run.id);
  }

  /**
   * What a retried attempt keeps from the attempt before it (its accepted updates and those it
   * had carried): an update counts again only if it was trained from the same base model
   * (its task's model hash equals the new attempt's), its site is still enrolled and its files
   * are still on disk; after a failed aggregation, only if its file still opens and decodes (so
   * an update damaged on disk does not fail every later attempt too). Nothing is carried into a first attempt, when the run opts out
   * (`reuseAcceptedUpdates: false`) or under secure aggregation (a masked update unmasks only
   * together with the masks of its own attempt's participants).
   */
  private async carryPlan(
    run: RunRecord,
    round: number,
    attempt: number,
    baseSha256: string,
  ): Promise<{ carry: UpdateRow[]; notCarried: { reason: string; updates: UpdateRow[] }[] }> {
    const earlier = attempt > 1 ? await this.d.repo.listRoundUpdates(run.id, round, attempt - 1) : [];
    if (earlier.length === 0) return { carry: [], notCarried: [] };
    const none = (reason: string) => ({ carry: [], notCarried: [{ reason, updates: earlier }] });
    if (run.config.reuseAcceptedUpdates === false) return none('the run sets reuseAcceptedUpdates: false');
    if (run.config.privacy?.secureAggregation)
      return none("secure aggregation: a masked update only unmasks within its own attempt's participants");
    const reopen =
      (await this.d.repo.getRound(run.id, round, attempt - 1))?.reason?.startsWith(AGGREGATION_FAILED) ??
      false;
    const carry: UpdateRow[] = [];
    const notCarried = new Map<string, UpdateRow[]>();
    for (const u of earlier) {
      const trainedFrom = (await this.d.repo.getTask(u.taskId))?.modelHash;
      let reason: string | null = null;
      if (trainedFrom !== baseSha256)
        reason = `base model changed: trained from ${trainedFrom ?? 'an unknown model'}, the round now starts from ${baseSha256}`;
      else if ((await this.d.sites.get(u.siteId))?.status !== 'enrolled') reason = 'site no longer enrolled';
      else if (!existsSync(u.envelopePath) || !existsSync(u.headerPath))
        reason = 'update files missing on disk';
      else if (reopen) {
        const problem = this.unreadable(run, u);
        if (problem !== null) reason = `update no longer opens: ${problem}`;
      }
      if (reason === null) carry.push(u);
      else notCarried.set(reason, [...(notCarried.get(reason) ?? []), u]);
    }
    return { carry, notCarried: [...notCarried].map(([reason, updates]) => ({ reason, updates })) };
  }

  /** Why an accepted update's sealed file no longer opens and decodes as it did at commit, or null. */
  private unreadable(run: RunRecord, u: UpdateRow): string | null {
    try {
      const { header } = this.d.updates.readHeader(u.headerPath);
      const boxKey = this.d.keys.boxSecretKeyFor(header, { allowExpired: true });
      decodeDelta(
        openEnvelopeFile(u.envelopePath, header, boxKey),
        run.config.model,
        run.config.maxUpdateNorm,
      );
      return null;
    } catch (e) {
      return isFedsslErrorLike(e) ? `${e.code}: ${e.message}` : String(e);
    }
  }

  /**
   * Sites that may take part in `run` now: online, enrolled (hence not revoked or pending),
   * not busy with another run's task, and with at least `minExamples` examples. Skipped
   * sites are logged with the reason.
   */
  private async eligibleSites(run: RunRecord): Promise<string[]> {
    const busy = new Map<string, string>();
    for (const t of await this.d.repo.listOfferedTasks()) if (t.runId !== run.id) busy.set(t.siteId, t.runId);
    const minExamples = run.config.minExamples ?? 0;
    const eligible: string[] = [];
    for (const id of this.d.transport.onlineSiteIds()) {
      const site = await this.d.sites.get(id);
      if (site?.status !== 'enrolled') continue;
      let skip: string | null = null;
      if (busy.has(id)) skip = `busy with a task of run ${busy.get(id)}`;
      else if (minExamples > 0 && (site.exampleCount ?? 0) < minExamples)
        skip =
          site.exampleCount === null || site.exampleCount === undefined
            ? `no example count reported; run needs ${minExamples}`
            : `${site.exampleCount} examples; run needs ${minExamples}`;
      if (skip) this.log.info({ runId: run.id, siteId: id, reason: skip }, 'site not selected');
      else eligible.push(id);
    }
    return eligible.sort();
  }

  private async siteOnline(siteId: string): Promise<void> {
    for (const runId of [...this.waiting.keys()]) await this.exclusive(runId, () => this.trySelect(runId));
    // A site that reconnects during training gets its outstanding task again (same task,
    // same nonce): the agent may have lost it with the connection.
    for (const task of await this.d.repo.listOfferedTasks()) {
      if (task.siteId !== siteId) continue;
      const round = await this.d.repo.latestRound(task.runId);
      if (round?.state === 'training' && round.round === task.round && round.attempt === task.attempt)
        this.offer(task);
    }
  }

  /** A revoked site's open tasks are dropped at once; its accepted updates are left out at aggregation. */
  private async siteRevoked(siteId: string): Promise<void> {
    for (const task of await this.d.repo.listOfferedTasks()) {
      if (task.siteId === siteId) await this.answer(task.id, 'dropped', 'site revoked');
    }
  }

  /** Re-tries selection for runs waiting for sites (a site may have become free). */
  private kickWaiting(exceptRunId: string): void {
    for (const runId of [...this.waiting.keys()]) {
      if (runId !== exceptRunId)
        this.background(
          this.exclusive(runId, () => this.trySelect(runId)),
          'retry selection',
        );
    }
  }

  private async trySelect(runId: string): Promise<void> {
    if (this.stopped) return;
    const run = await this.getRun(runId);
    const round = await this.d.repo.latestRound(runId);
    if (run.state !== 'running' || round?.state !== 'open') {
      this.waiting.delete(runId);
      return;
    }
    // A site whose update was carried into this attempt has done its work for the round.
    const carried = new Set(
      (await this.d.repo.listCarriedUpdates(runId, round.round, round.attempt)).map((u) => u.siteId),
    );
    const eligible = (await this.eligibleSites(run)).filter((id) => !carried.has(id));
    const { minSites } = run.config;
    const needed = Math.max(0, minSites - carried.size);
    if (eligible.length < needed) {
      if (this.waiting.get(runId) !== eligible.length) {
        this.log.info(
          {
            runId,
            round: round.round,
            attempt: round.attempt,
            online: eligible.length,
            minSites,
            ...(carried.size > 0 ? { carried: carried.size } : {}),
            waitingFor: needed - eligible.length,
          },
          'waiting for sites',
        );
      }
      this.waiting.set(runId, eligible.length);
      return;
    }
    this.waiting.delete(runId);
    if (eligible.length === 0) {
      // Only possible with carried updates enough for the quorum (the attempt before failed
      // after collecting them) and no other site to ask: aggregate them as they are.
      this.log.info(
        { runId, round: round.round, attempt: round.attempt, carried: carried.size },
        'round aggregating carried updates only',
      );
      await this.aggregate(runId, round);
      return;
    }
    await this.issueTasks(run, round, eligible);
  }

  private async issueTasks(run: RunRecord, round: RoundRow, siteIds: string[]): Promise<void> {
    const now = this.d.clock.now();
    const deadlineMs = now + run.config.roundDeadlineSeconds * 1000;
    const deadline = new Date(deadlineMs).toISOString();
    const tasks: TaskRow[] = siteIds.map((siteId) => {
      const task: Task = {
        taskId: `task-${randomBytes(12).toString('hex')}`,
        runId: run.id,
        round: round.round,
        siteId,
        modelVersion: round.baseModelVersion,
        modelHash: round.baseModelSha256,
        model: run.config.model,
        training: run.config.training,
        ...(run.config.privacy ? { privacy: run.config.privacy } : {}),
        nonce: toBase64(randomBytes(32)),
        issuedAt: new Date(now).toISOString(),
        deadline,
      };
      const signed = signTask(task, this.d.keys.keys.signing.secretKey);
      return {
        id: task.taskId,
        runId: run.id,
        round: round.round,
        attempt: round.attempt,
        siteId,
        nonce: task.nonce,
        modelVersion: task.modelVersion,
        modelHash: task.modelHash,
        issuedAt: task.issuedAt,
        deadline,
        state: 'offered',
        reason: null,
        answeredAt: null,
        signedTask: signed,
      };
    });
    // Persist tasks and the training state before anything is sent.
    await this.d.repo.transaction(async () => {
      for (const t of tasks) await this.d.repo.insertTask(t);
      await this.d.repo.updateRound(run.id, round.round, round.attempt, { state: 'training', deadline });
    });
    this.log.info(
      { runId: run.id, round: round.round, attempt: round.attempt, sites: siteIds.length, deadline },
      'round training',
    );
    this.events.emit('round', {
      runId: run.id,
      round: round.round,
      attempt: round.attempt,
      state: 'training',
    });
    this.armDeadline(run.id, round, deadlineMs);
    for (const t of tasks) this.offer(t);
    // The sites set up their masks while they train (docs/privacy.md).
    if (run.config.privacy?.secureAggregation)
      this.secagg.start(run, round, tasks, this.d.transport, (taskId, siteId) => {
        const reason = 'left out of secure aggregation';
        this.d.transport.cancelTask(siteId, taskId, reason);
        this.background(this.answer(taskId, 'dropped', reason), 'secure aggregation');
      });
  }

  private offer(task: TaskRow): void {
    this.d.transport.offerTask(task.siteId, this.d.keys.currentTask(task.signedTask)).then(
      (res) => {
        if (!res.accepted)
          this.background(this.answer(task.id, 'dropped', `task declined: ${res.reason}`), 'task declined');
      },
      (e: unknown) =>
        this.background(
          this.answer(task.id, 'dropped', `task offer failed: ${e instanceof Error ? e.message : String(e)}`),
          'task offer failed',
        ),
    );
  }

  private armDeadline(runId: string, round: RoundRow, deadlineMs: number): void {
    this.deadlines.get(runId)?.();
    const cancel = this.d.clock.schedule(deadlineMs - this.d.clock.now(), () => {
      this.deadlines.delete(runId);
      this.background(
        this.exclusive(runId, () => this.onDeadline(runId, round.round, round.attempt)),
        'round deadline',
      );
    });
    this.deadlines.set(runId, cancel);
  }

  private async resumeTraining(run: RunRecord, round: RoundRow, reoffer: boolean): Promise<void> {
    const deadlineMs = Date.parse(round.deadline ?? this.iso());
    if (deadlineMs <= this.d.clock.now()) return this.onDeadline(run.id, round.round, round.attempt);
    if (reoffer || !this.deadlines.has(run.id)) this.armDeadline(run.id, round, deadlineMs);
    const tasks = await this.d.repo.listTasks(run.id, round.round, round.attempt);
    if (reoffer) {
      // Only to sites connected now. Right after a restart no agent has reconnected yet, and
      // an offer to an offline site resolves `accepted: false`, which would drop the task and
      // fail the round, throwing away the updates it had accepted. An offline site gets the
      // same task again from siteOnline when it reconnects; the round deadline bounds the wait.
      const online = new Set(this.d.transport.onlineSiteIds());
      for (const t of tasks) if (t.state === 'offered' && online.has(t.siteId)) this.offer(t);
    }
    await this.checkComplete(run.id, round.round, round.attempt);
  }

  // ------------------------------------------------------------------ answers

  /**
   * Checks that an update for `task` may still be accepted now; returns the error code and
   * message if not (used by UploadService before and after receiving the bytes).
   */
  async taskAnswerability(task: TaskRow): Promise<{ code: ErrorCode; message: string } | null> {
    if (this.d.clock.now() > Date.parse(task.deadline))
      return { code: 'TASK_EXPIRED', message: `task ${task.id} passed its deadline ${task.deadline}` };
    if (task.state !== 'offered')
      return {
        code: 'TASK_ALREADY_ANSWERED',
        message: `task ${task.id} was already answered (${task.state})`,
      };
    const round = await this.d.repo.getRound(task.runId, task.round, task.attempt);
    const latest = await this.d.repo.latestRound(task.runId);
    if (round?.state !== 'training' || latest?.attempt !== task.attempt || latest.round !== task.round) {
      return {
        code: 'TASK_EXPIRED',
        message: `task ${task.id} belongs to a round that is no longer collecting updates`,
      };
    }
    return null;
  }

  /**
   * Records a non-accepted answer of a task (declined, rejected update, agent failure) and
   * re-evaluates the round. A task answered already keeps its first answer.
   */
  async answer(taskId: string, state: 'rejected' | 'failed' | 'dropped', reason: string): Promise<boolean> {
    const task = await this.d.repo.getTask(taskId);
    if (!task) return false;
    return this.exclusive(task.runId, async () => {
      const text = reason.slice(0, 500);
      const changed = await this.d.repo.transaction(async () => {
        const ok = await this.d.repo.answerTask(taskId, state, text, this.iso());
        if (ok && state === 'rejected') {
          await this.d.audit.append('system', 'update.rejected', taskId, {
            siteId: task.siteId,
            runId: task.runId,
            round: task.round,
            reason: text,
          });
        }
        return ok;
      });
      if (changed) {
        this.log.info(
          { runId: task.runId, round: task.round, siteId: task.siteId, taskId, state, reason },
          'task answered',
        );
        await this.checkComplete(task.runId, task.round, task.attempt);
        this.kickWaiting(task.runId);
      }
      return changed;
    });
  }

  /** An agent reported that it could not complete a task (`task:failed`). */
  async taskFailed(siteId: string, taskId: string, code: string, message: string): Promise<void> {
    const task = await this.d.repo.getTask(taskId);
    if (!task || task.siteId !== siteId) {
      throw new FedsslError('TASK_UNKNOWN', `task ${taskId} was not issued to this site`);
    }
    await this.answer(taskId, 'failed', `${code}: ${message}`);
  }

  /** Called by UploadService after an accepted update and its task answer were stored. */
  async updateAccepted(taskId: string): Promise<void> {
    const task = await this.d.repo.getTask(taskId);
    if (!task) return;
    try {
      await this.exclusive(task.runId, () => this.checkComplete(task.runId, task.round, task.attempt));
    } catch (e) {
      // The update is stored and accepted whatever happens next; a full disk must not turn the
      // uploader's commit into an error. Other failures still surface.
      if (!this.deferOnFullDisk(task.runId, task.round, e)) throw e;
    }
    this.kickWaiting(task.runId);
  }

  /**
   * Out of space while aggregating or publishing: the round stays `aggregating` (its accepted
   * updates are on disk) and is tried again with a growing delay, so it completes once space
   * is freed. Returns false for any other error.
   */
  private deferOnFullDisk(runId: string, round: number, e: unknown): boolean {
    if (!(isOutOfSpace(e) || (isFedsslErrorLike(e) && e.code === 'STORAGE_FULL'))) return false;
    const retries = (this.deferred.get(runId)?.retries ?? 0) + 1;
    const delayMs = Math.min(60_000, 1000 * 2 ** Math.min(retries - 1, 6));
    this.log.error(
      { runId, round, retryInMs: delayMs, err: e instanceof Error ? e.message : String(e) },
      'aggregation deferred: data directory full',
    );
    this.deferred.get(runId)?.cancel();
    const cancel = this.d.clock.schedule(delayMs, () =>
      this.background(
        this.exclusive(runId, () => this.advance(runId, false)),
        'deferred aggregation',
      ),
    );
    this.deferred.set(runId, { cancel, retries });
    return true;
  }

  private async checkComplete(runId: string, roundNo: number, attempt: number): Promise<void> {
    if (this.stopped) return;
    const round = await this.d.repo.getRound(runId, roundNo, attempt);
    if (round?.state !== 'training') return;
    const tasks = await this.d.repo.listTasks(runId, roundNo, attempt);
    if (tasks.some((t) => t.state === 'offered')) return;
    const run = await this.getRun(runId);
    const counted = await this.countedUpdates(round, tasks);
    if (counted.total >= run.config.minSites) await this.aggregate(runId, round);
    else
      await this.failRound(
        run,
        round,
        `every task answered with ${counted.text}; need ${run.config.minSites}`,
      );
  }

  /** Accepted updates that count in a round attempt: its own and those carried into it. */
  private async countedUpdates(
    round: RoundRow,
    tasks: readonly TaskRow[],
  ): Promise<{ total: number; text: string }> {
    const own = tasks.filter((t) => t.state === 'accepted').length;
    const carried = (await this.d.repo.listCarriedUpdates(round.runId, round.round, round.attempt)).length;
    const total = own + carried;
    return {
      total,
      text:
        carried === 0
          ? `${total} accepted update(s)`
          : `${total} accepted update(s) (${carried} carried over from an earlier attempt)`,
    };
  }

  private async onDeadline(runId: string, roundNo: number, attempt: number): Promise<void> {
    if (this.stopped) return;
    const round = await this.d.repo.getRound(runId, roundNo, attempt);
    if (round?.state !== 'training') return;
    const run = await this.getRun(runId);
    const counted = await this.countedUpdates(round, await this.d.repo.listTasks(runId, roundNo, attempt));
    if (counted.total >= run.config.minSites) {
      await this.dropOutstanding(round, 'round deadline passed');
      await this.aggregate(runId, round);
    } else {
      await this.failRound(run, round, `deadline passed with ${counted.text}; need ${run.config.minSites}`);
    }
    this.kickWaiting(runId);
  }

  /** Marks still-offered tasks dropped (persisted first), then tells their agents to stop. */
  private async dropOutstanding(round: RoundRow, reason: string): Promise<void> {
    const open = (await this.d.repo.listTasks(round.runId, round.round, round.attempt)).filter(
      (t) => t.state === 'offered',
    );
    await this.d.repo.transaction(async () => {
      for (const t of open) await this.d.repo.answerTask(t.id, 'dropped', reason, this.iso());
    });
    for (const t of open) this.d.transport.cancelTask(t.siteId, t.id, reason);
  }

  private async failRound(run: RunRecord, round: RoundRow, reason: string): Promise<void> {
    this.deadlines.get(run.id)?.();
    this.deadlines.delete(run.id);
    const open = (await this.d.repo.listTasks(round.runId, round.round, round.attempt)).filter(
      (t) => t.state === 'offered',
    );
    await this.d.repo.transaction(async () => {
      for (const t of open) await this.d.repo.answerTask(t.id, 'dropped', 'round failed', this.iso());
      await this.d.repo.updateRound(run.id, round.round, round.attempt, { state: 'failed', reason });
      await this.d.audit.append('system', 'round.failed', run.id, {
        round: round.round,
        attempt: round.attempt,
        reason,
      });
    });
    for (const t of open) this.d.transport.cancelTask(t.siteId, t.id, 'round failed');
    this.log.warn({ runId: run.id, round: round.round, attempt: round.attempt, reason }, 'round failed');
    this.events.emit('round', { runId: run.id, round: round.round, attempt: round.attempt, state: 'failed' });
    await this.afterFailed(await this.getRun(run.id), { ...round, state: 'failed', reason });
  }

  private async afterFailed(run: RunRecord, round: RoundRow): Promise<void> {
    if (run.state !== 'running') return; // paused: retried on resume
    if (round.attempt < MAX_ROUND_ATTEMPTS) {
      await this.openRound(run, round.round, round.attempt + 1);
      return;
    }
    const reason = `round ${round.round} failed ${MAX_ROUND_ATTEMPTS} times; last: ${round.reason ?? 'unknown'}`;
    await this.d.repo.transaction(async () => {
      await this.d.repo.updateRun(run.id, { state: 'failed', reason }, this.iso());
      await this.d.audit.append('system', 'run.failed', run.id, { reason });
    });
    this.log.error({ runId: run.id, round: round.round, reason }, 'run failed');
    this.events.emit('run', { runId: run.id, state: 'failed' });
  }

  // ------------------------------------------------------------------ aggregation

  private async aggregate(runId: string, roundIn: RoundRow): Promise<void> {
    this.deadlines.get(runId)?.();
    this.deadlines.delete(runId);
    const run = await this.getRun(runId);
    await this.d.repo.updateRound(runId, roundIn.round, roundIn.attempt, { state: 'aggregating' });
    const round = { ...roundIn, state: 'aggregating' as const };
    const version = modelVersionOf(runId, round.round);
    let manifest = this.d.models.getManifest(version);
    if (!manifest) {
      const started = performance.now();
      const timed = (ok: boolean): void => {
        const seconds = (performance.now() - started) / 1000;
        this.events.emit('aggregation', { runId, round: round.round, seconds, ok });
      };
      try {
        manifest = await this.foldAndPublish(run, round, version);
        timed(true);
      } catch (e) {
        timed(false);
        if (this.deferOnFullDisk(runId, round.round, e)) return;
        const reason = `${AGGREGATION_FAILED}${isFedsslErrorLike(e) ? `${e.code}: ${e.message}` : String(e)}`;
        this.log.error({ runId, round: round.round, err: e }, 'aggregation failed');
        await this.d.repo.updateRound(runId, round.round, round.attempt, { state: 'training' });
        await this.failRound(run, round, reason);
        return;
      }
    }
    // Crash here in the faults suite: the version is on disk, the store does not say so yet.
    faultPoint('aggregation.after-publish', { runId, round: round.round });
    this.deferred.delete(runId);
    const publishedAt = this.iso();
    const published = manifest;
    const privacy = await privacySpent(this.d.repo, run);
    const marked = this.d.repo.transaction(async () => {
      await this.d.repo.updateRound(runId, round.round, round.attempt, {
        state: 'published',
        publishedAt,
        modelVersion: version,
        modelSha256: published.manifest.weightsSha256,
      });
      await this.d.repo.updateRun(runId, { latestModelVersion: version }, publishedAt);
      await this.d.audit.append('system', 'round.published', runId, {
        round: round.round,
        attempt: round.attempt,
        version,
        sha256: published.manifest.weightsSha256,
        sites: published.manifest.sites.map((s) => s.siteId),
        ...(privacy
          ? { privacy: { epsilon: privacy.epsilon, delta: privacy.delta, releases: privacy.releases } }
          : {}),
      });
    });
    try {
      await marked;
    } catch (e) {
      // A full database: the version is on disk and is picked up again by the retry.
      if (this.deferOnFullDisk(runId, round.round, e)) return;
      throw e;
    }
    if (privacy)
      this.log.info(
        {
          runId,
          round: round.round,
          epsilon: privacy.epsilon,
          delta: privacy.delta,
          releases: privacy.releases,
        },
        'privacy spent',
      );
    this.log.info(
      { runId, round: round.round, version, sites: manifest.manifest.sites.length },
      'round published',
    );
    this.events.emit('round', { runId, round: round.round, attempt: round.attempt, state: 'published' });
    await this.afterPublished(await this.getRun(runId), {
      ...round,
      state: 'published',
      modelVersion: version,
    });
  }

  /**
   * Folds the attempt's accepted updates (with those carried into it), read back from disk one
   * at a time in siteId order, and publishes.
   */
  private async foldAndPublish(run: RunRecord, round: RoundRow, version: string) {
    // Crash (or full disk) here in the faults suite: the round is `aggregating`, nothing published.
    faultPoint('aggregation.before-publish', { runId: run.id, round: round.round });
    const sources: UpdateSource[] = [];
    const masked: MaskedUpload[] = [];
    for (const u of await this.d.repo.listRoundUpdates(run.id, round.round, round.attempt)) {
      if ((await this.d.sites.get(u.siteId))?.status !== 'enrolled') {
        this.log.warn(
          { runId: run.id, round: round.round, siteId: u.siteId },
          'update of a site no longer enrolled left out',
        );
        continue;
      }
      // Accepted in time, so opened even if its box key's grace has ended since.
      const boxKey = (header: UpdateHeader) => this.d.keys.boxSecretKeyFor(header, { allowExpired: true });
      // What commit opened if still held, else opened again from the sealed file (same values).
      masked.push({
        siteId: u.siteId,
        exampleCount: u.exampleCount,
        readPlain: () => this.d.updates.readAcceptedPlain(u, boxKey),
      });
      // Read lazily: strategies take one delta at a time, in siteId order.
      let delta: NamedTensors | undefined;
      sources.push({
        siteId: u.siteId,
        exampleCount: u.exampleCount,
        readDelta: () =>
          (delta = this.d.updates.readAcceptedDelta(u, boxKey, run.config.model, run.config.maxUpdateNorm)),
        // Its plaintext buffer then serves the next update opened (this round's or the next).
        release: () => {
          if (delta) this.d.updates.recycle([delta]);
          delta = undefined;
        },
      });
    }
    if (sources.length < run.config.minSites) {
      throw new FedsslError(
        'RUN_INVALID_STATE',
        `only ${sources.length} update(s) of enrolled sites to aggregate; need ${run.config.minSites}`,
      );
    }
    // Secure aggregation: only the sum of the masked updates is ever unmasked (FedAvg only).
    // Otherwise the strategy, which saves its server state (if any) before the version is published.
    const { weights, strategyName, sites } = run.config.privacy?.secureAggregation
      ? {
          ...(await this.secagg.aggregate(
            run.id,
            round,
            run.config.model,
            masked,
            this.d.models.readWeights(round.baseModelVersion),
          )),
          strategyName: 'fedavg+secagg',
        }
      : {
          ...aggregateRound({
            strategy: run.config.strategy,
            dataDir: this.d.updates.dataDir,
            runId: run.id,
            round: round.round,
            baseVersion: round.baseModelVersion,
            version,
            global: this.d.models.readWeights(round.baseModelVersion),
            updates: sources,
            buffers: this.d.updates.opened.buffers,
          }),
          sites: sources.map((u) => ({ siteId: u.siteId, exampleCount: u.exampleCount })),
        };
    return this.d.models.publish({
      version,
      runId: run.id,
      round: round.round,
      model: run.config.model,
      weights,
      parentVersion: round.baseModelVersion,
      parentSha256: round.baseModelSha256,
      sites,
      strategy: strategyName,
      hyperparameters: runHyperparameters(run),
    });
  }

  private async afterPublished(run: RunRecord, round: RoundRow): Promise<void> {
    if (run.state !== 'running') return; // paused: the next round opens on resume
    if (round.round >= run.config.rounds) {
      await this.d.repo.transaction(async () => {
        await this.d.repo.updateRun(run.id, { state: 'completed' }, this.iso());
        await this.d.audit.append('system', 'run.completed', run.id, {
          rounds: round.round,
          version: round.modelVersion,
        });
      });
      this.log.info({ runId: run.id, rounds: round.round, version: round.modelVersion }, 'run completed');
      this.events.emit('run', { runId: run.id, state: 'completed' });
      return;
    }
    await this.openRound(run, round.round + 1, 1);
  }
}
