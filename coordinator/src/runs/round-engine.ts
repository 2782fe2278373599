import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { signTask, toBase64 } from '@fedssl/shared/crypto';
import { FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import { initSharedWeights } from '@fedssl/shared/model';
import type { Task } from '@fedssl/shared/protocol';
import { strategyLabel, type UpdateSource } from '../strategies';
import { aggregateRound } from '../strategies/aggregate-round';
import type { AgentTransport } from '../transport/agent-transport';
import { decodeDelta, openEnvelopeFile, type UpdateStore } from '../uploads/update-store';
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
} from './run.types';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';

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
}

/**
 * Domain events, emitted after the transition is persisted (the console notifier turns them
 * into socket messages): `'run'` when a run changes state, `'round'` when a round does.
 */
export interface RoundEngineEvents {
  run: [event: { runId: string; state: RunState }];
  round: [event: { runId: string; round: number; attempt: number; state: RoundState }];
}

/** Global model version name of a run's round (round 0 = initial weights). */
export function modelVersionOf(runId: string, round: number): string {
  return `${runId}.r${round}`;
}

/**
 * The persisted round state machine (ARCHITECTURE.md §2):
 *   run:   created → running → completed | cancelled | failed
 *   round: open → training → aggregating → published   (or → failed, retried as a new attempt)
 * Every transition is written to the store before it is acted on, so {@link resumeAll}
 * after a restart continues from the store alone. In-memory state is limited to timers
 * and "waiting for sites" flags, both rebuilt by resume.
 */
export class RoundEngine {
  private readonly log: Logger;
  private readonly deadlines = new Map<string, CancelTimer>();
  /** Runs whose open round waits for sites, with the online count last logged. */
  private readonly waiting = new Map<string, number>();
  private readonly onOnline = (siteId: string): void => this.siteOnline(siteId);
  private readonly onRevoked = (siteId: string): void => this.siteRevoked(siteId);
  private stopped = false;
  /** See {@link RoundEngineEvents}. */
  readonly events = new EventEmitter<RoundEngineEvents>();

  constructor(private readonly d: RoundEngineDeps) {
    this.log = d.logger.child({ context: 'RoundEngine' });
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
    this.waiting.clear();
  }

  private iso(): string {
    return new Date(this.d.clock.now()).toISOString();
  }

  private getRun(runId: string): RunRecord {
    const run = this.d.repo.getRun(runId);
    if (!run) throw new FedsslError('RUN_NOT_FOUND', `run ${runId} does not exist`);
    return run;
  }

  // ------------------------------------------------------------------ run lifecycle

  /**
   * Starts a created run: publishes version 0 from the run's seed and opens round 1.
   * @throws FedsslError RUN_NOT_FOUND; RUN_INVALID_STATE unless the run is `created`.
   */
  start(runId: string): RunRecord {
    const run = this.getRun(runId);
    if (run.state !== 'created') {
      throw new FedsslError(
        'RUN_INVALID_STATE',
        `run ${runId} is ${run.state}; only a created run can be started`,
      );
    }
    this.d.repo.updateRun(runId, { state: 'running' }, this.iso());
    this.log.info({ runId }, 'run started');
    this.events.emit('run', { runId, state: 'running' });
    this.advance(runId);
    return this.getRun(runId);
  }

  /** Resumes every run that was running when the coordinator stopped. */
  resumeAll(): void {
    for (const run of this.d.repo.listRuns('running')) {
      this.log.info({ runId: run.id, round: run.currentRound }, 'resuming run');
      try {
        this.advance(run.id);
      } catch (e) {
        this.log.error({ runId: run.id, err: e }, 'could not resume run');
      }
    }
  }

  /**
   * Moves a running run forward from whatever its persisted state is. Idempotent: calling
   * it again in the same state does nothing new (used by start and resume).
   */
  private advance(runId: string): void {
    if (this.stopped) return;
    const run = this.getRun(runId);
    if (run.state !== 'running') return;
    if (run.initialModelVersion === null) {
      this.publishInitial(run);
      return this.advance(runId);
    }
    const round = this.d.repo.latestRound(runId);
    if (!round) {
      this.openRound(this.getRun(runId), 1, 1);
      return;
    }
    switch (round.state) {
      case 'open':
        return this.trySelect(runId);
      case 'training':
        return this.resumeTraining(run, round);
      case 'aggregating':
        return this.aggregate(runId, round);
      case 'published':
        return this.afterPublished(run, round);
      case 'failed':
        return this.afterFailed(run, round);
    }
  }

  private publishInitial(run: RunRecord): void {
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
      });
    }
    this.d.repo.updateRun(run.id, { initialModelVersion: version, latestModelVersion: version }, this.iso());
    this.log.info({ runId: run.id, version }, 'initial model published');
  }

  private openRound(run: RunRecord, round: number, attempt: number): void {
    const base = run.latestModelVersion;
    const manifest = base === null ? undefined : this.d.models.getManifest(base);
    if (!base || !manifest)
      throw new FedsslError('MODEL_VERSION_NOT_FOUND', `base model of run ${run.id} is missing`);
    this.d.repo.transaction(() => {
      this.d.repo.insertRound({
        runId: run.id,
        round,
        attempt,
        state: 'open',
        startedAt: this.iso(),
        deadline: null,
        publishedAt: null,
        baseModelVersion: base,
        baseModelSha256: manifest.manifest.weightsSha256,
        modelVersion: null,
        modelSha256: null,
        reason: null,
      });
      this.d.repo.updateRun(run.id, { currentRound: round }, this.iso());
    });
    this.log.info({ runId: run.id, round, attempt }, 'round open');
    this.events.emit('round', { runId: run.id, round, attempt, state: 'open' });
    this.trySelect(run.id);
  }

  /** Sites that may take part now: online, enrolled (hence not revoked or pending). */
  private eligibleSites(): string[] {
    return this.d.transport
      .onlineSiteIds()
      .filter((id) => this.d.sites.get(id)?.status === 'enrolled')
      .sort();
  }

  private siteOnline(siteId: string): void {
    for (const runId of [...this.waiting.keys()]) this.trySelect(runId);
    // A site that reconnects during training gets its outstanding task again (same task,
    // same nonce): the agent may have lost it with the connection.
    for (const run of this.d.repo.listRuns('running')) {
      const round = this.d.repo.latestRound(run.id);
      if (round?.state !== 'training') continue;
      const task = this.d.repo.listTasks(run.id, round.round, round.attempt).find((t) => t.siteId === siteId);
      if (task?.state === 'offered') this.offer(task);
    }
  }

  /** A revoked site's open tasks are dropped at once; its accepted updates are left out at aggregation. */
  private siteRevoked(siteId: string): void {
    for (const run of this.d.repo.listRuns('running')) {
      const round = this.d.repo.latestRound(run.id);
      if (round?.state !== 'training') continue;
      const task = this.d.repo.listTasks(run.id, round.round, round.attempt).find((t) => t.siteId === siteId);
      if (task?.state === 'offered') this.answer(task.id, 'dropped', 'site revoked');
    }
  }

  private trySelect(runId: string): void {
    if (this.stopped) return;
    const run = this.getRun(runId);
    const round = this.d.repo.latestRound(runId);
    if (run.state !== 'running' || round?.state !== 'open') {
      this.waiting.delete(runId);
      return;
    }
    const eligible = this.eligibleSites();
    const { minSites } = run.config;
    if (eligible.length < minSites) {
      if (this.waiting.get(runId) !== eligible.length) {
        this.log.info(
          {
            runId,
            round: round.round,
            attempt: round.attempt,
            online: eligible.length,
            minSites,
            waitingFor: minSites - eligible.length,
          },
          'waiting for sites',
        );
      }
      this.waiting.set(runId, eligible.length);
      return;
    }
    this.waiting.delete(runId);
    this.issueTasks(run, round, eligible);
  }

  private issueTasks(run: RunRecord, round: RoundRow, siteIds: string[]): void {
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
    this.d.repo.transaction(() => {
      for (const t of tasks) this.d.repo.insertTask(t);
      this.d.repo.updateRound(run.id, round.round, round.attempt, { state: 'training', deadline });
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
  }

  private offer(task: TaskRow): void {
    this.d.transport.offerTask(task.siteId, task.signedTask).then(
      (res) => {
        if (!res.accepted) this.answer(task.id, 'dropped', `task declined: ${res.reason}`);
      },
      (e: unknown) =>
        this.answer(task.id, 'dropped', `task offer failed: ${e instanceof Error ? e.message : String(e)}`),
    );
  }

  private armDeadline(runId: string, round: RoundRow, deadlineMs: number): void {
    this.deadlines.get(runId)?.();
    const cancel = this.d.clock.schedule(deadlineMs - this.d.clock.now(), () => {
      this.deadlines.delete(runId);
      this.onDeadline(runId, round.round, round.attempt);
    });
    this.deadlines.set(runId, cancel);
  }

  private resumeTraining(run: RunRecord, round: RoundRow): void {
    const deadlineMs = Date.parse(round.deadline ?? this.iso());
    if (deadlineMs <= this.d.clock.now()) return this.onDeadline(run.id, round.round, round.attempt);
    this.armDeadline(run.id, round, deadlineMs);
    const tasks = this.d.repo.listTasks(run.id, round.round, round.attempt);
    for (const t of tasks) if (t.state === 'offered') this.offer(t);
    this.checkComplete(run.id, round.round, round.attempt);
  }

  // ------------------------------------------------------------------ answers

  /**
   * Checks that an update for `task` may still be accepted now; returns the error code and
   * message if not (used by UploadService before and after receiving the bytes).
   */
  taskAnswerability(task: TaskRow): { code: ErrorCode; message: string } | null {
    if (this.d.clock.now() > Date.parse(task.deadline))
      return { code: 'TASK_EXPIRED', message: `task ${task.id} passed its deadline ${task.deadline}` };
    if (task.state !== 'offered')
      return {
        code: 'TASK_ALREADY_ANSWERED',
        message: `task ${task.id} was already answered (${task.state})`,
      };
    const round = this.d.repo.getRound(task.runId, task.round, task.attempt);
    const latest = this.d.repo.latestRound(task.runId);
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
  answer(taskId: string, state: 'rejected' | 'failed' | 'dropped', reason: string): boolean {
    const task = this.d.repo.getTask(taskId);
    if (!task) return false;
    const changed = this.d.repo.answerTask(taskId, state, reason.slice(0, 500), this.iso());
    if (changed) {
      this.log.info(
        { runId: task.runId, round: task.round, siteId: task.siteId, taskId, state, reason },
        'task answered',
      );
      this.checkComplete(task.runId, task.round, task.attempt);
    }
    return changed;
  }

  /** An agent reported that it could not complete a task (`task:failed`). */
  taskFailed(siteId: string, taskId: string, code: string, message: string): void {
    const task = this.d.repo.getTask(taskId);
    if (!task || task.siteId !== siteId) {
      throw new FedsslError('TASK_UNKNOWN', `task ${taskId} was not issued to this site`);
    }
    this.answer(taskId, 'failed', `${code}: ${message}`);
  }

  /** Called by UploadService after an accepted update and its task answer were stored. */
  updateAccepted(taskId: string): void {
    const task = this.d.repo.getTask(taskId);
    if (task) this.checkComplete(task.runId, task.round, task.attempt);
  }

  private checkComplete(runId: string, roundNo: number, attempt: number): void {
    if (this.stopped) return;
    const round = this.d.repo.getRound(runId, roundNo, attempt);
    if (round?.state !== 'training') return;
    const tasks = this.d.repo.listTasks(runId, roundNo, attempt);
    if (tasks.some((t) => t.state === 'offered')) return;
    const run = this.getRun(runId);
    const accepted = tasks.filter((t) => t.state === 'accepted').length;
    if (accepted >= run.config.minSites) this.aggregate(runId, round);
    else
      this.failRound(
        run,
        round,
        `every task answered with ${accepted} accepted update(s); need ${run.config.minSites}`,
      );
  }

  private onDeadline(runId: string, roundNo: number, attempt: number): void {
    if (this.stopped) return;
    const round = this.d.repo.getRound(runId, roundNo, attempt);
    if (round?.state !== 'training') return;
    const run = this.getRun(runId);
    const accepted = this.d.repo
      .listTasks(runId, roundNo, attempt)
      .filter((t) => t.state === 'accepted').length;
    if (accepted >= run.config.minSites) {
      this.dropOutstanding(round, 'round deadline passed');
      this.aggregate(runId, round);
    } else {
      this.failRound(
        run,
        round,
        `deadline passed with ${accepted} accepted update(s); need ${run.config.minSites}`,
      );
    }
  }

  /** Marks still-offered tasks dropped (persisted first), then tells their agents to stop. */
  private dropOutstanding(round: RoundRow, reason: string): void {
    const open = this.d.repo
      .listTasks(round.runId, round.round, round.attempt)
      .filter((t) => t.state === 'offered');
    this.d.repo.transaction(() => {
      for (const t of open) this.d.repo.answerTask(t.id, 'dropped', reason, this.iso());
    });
    for (const t of open) this.d.transport.cancelTask(t.siteId, t.id, reason);
  }

  private failRound(run: RunRecord, round: RoundRow, reason: string): void {
    this.deadlines.get(run.id)?.();
    this.deadlines.delete(run.id);
    const open = this.d.repo
      .listTasks(round.runId, round.round, round.attempt)
      .filter((t) => t.state === 'offered');
    this.d.repo.transaction(() => {
      for (const t of open) this.d.repo.answerTask(t.id, 'dropped', 'round failed', this.iso());
      this.d.repo.updateRound(run.id, round.round, round.attempt, { state: 'failed', reason });
    });
    for (const t of open) this.d.transport.cancelTask(t.siteId, t.id, 'round failed');
    this.log.warn({ runId: run.id, round: round.round, attempt: round.attempt, reason }, 'round failed');
    this.events.emit('round', { runId: run.id, round: round.round, attempt: round.attempt, state: 'failed' });
    this.afterFailed(this.getRun(run.id), { ...round, state: 'failed', reason });
  }

  private afterFailed(run: RunRecord, round: RoundRow): void {
    if (round.attempt < MAX_ROUND_ATTEMPTS) {
      this.openRound(run, round.round, round.attempt + 1);
      return;
    }
    const reason = `round ${round.round} failed ${MAX_ROUND_ATTEMPTS} times; last: ${round.reason ?? 'unknown'}`;
    this.d.repo.updateRun(run.id, { state: 'failed', reason }, this.iso());
    this.log.error({ runId: run.id, round: round.round, reason }, 'run failed');
    this.events.emit('run', { runId: run.id, state: 'failed' });
  }

  // ------------------------------------------------------------------ aggregation

  private aggregate(runId: string, roundIn: RoundRow): void {
    this.deadlines.get(runId)?.();
    this.deadlines.delete(runId);
    const run = this.getRun(runId);
    this.d.repo.updateRound(runId, roundIn.round, roundIn.attempt, { state: 'aggregating' });
    const round = { ...roundIn, state: 'aggregating' as const };
    const version = modelVersionOf(runId, round.round);
    let manifest = this.d.models.getManifest(version);
    if (!manifest) {
      try {
        manifest = this.foldAndPublish(run, round, version);
      } catch (e) {
        const reason = `aggregation failed: ${isFedsslErrorLike(e) ? `${e.code}: ${e.message}` : String(e)}`;
        this.log.error({ runId, round: round.round, err: e }, 'aggregation failed');
        this.d.repo.updateRound(runId, round.round, round.attempt, { state: 'training' });
        this.failRound(run, round, reason);
        return;
      }
    }
    const publishedAt = this.iso();
    this.d.repo.transaction(() => {
      this.d.repo.updateRound(runId, round.round, round.attempt, {
        state: 'published',
        publishedAt,
        modelVersion: version,
        modelSha256: manifest.manifest.weightsSha256,
      });
      this.d.repo.updateRun(runId, { latestModelVersion: version }, publishedAt);
    });
    this.log.info(
      { runId, round: round.round, version, sites: manifest.manifest.sites.length },
      'round published',
    );
    this.events.emit('round', { runId, round: round.round, attempt: round.attempt, state: 'published' });
    this.afterPublished(this.getRun(runId), { ...round, state: 'published' });
  }

  /** Folds accepted updates, read back from disk one at a time in siteId order, and publishes. */
  private foldAndPublish(run: RunRecord, round: RoundRow, version: string) {
    const sources: UpdateSource[] = [];
    for (const u of this.d.repo.listUpdates(run.id, round.round, round.attempt)) {
      if (this.d.sites.get(u.siteId)?.status !== 'enrolled') {
        this.log.warn(
          { runId: run.id, round: round.round, siteId: u.siteId },
          'update of a site no longer enrolled left out',
        );
        continue;
      }
      // Read lazily: strategies hold one decrypted delta at a time (memory O(model)).
      sources.push({
        siteId: u.siteId,
        exampleCount: u.exampleCount,
        readDelta: () => {
          const { header } = this.d.updates.readHeader(u.headerPath);
          const plain = openEnvelopeFile(u.envelopePath, header, this.d.keys.keys.box.secretKey);
          return decodeDelta(plain, run.config.model, run.config.maxUpdateNorm);
        },
      });
    }
    if (sources.length < run.config.minSites) {
      throw new FedsslError(
        'RUN_INVALID_STATE',
        `only ${sources.length} update(s) of enrolled sites to aggregate; need ${run.config.minSites}`,
      );
    }
    // Saves the server optimizer state (if any) durably before the version is published.
    const { weights, strategyName } = aggregateRound({
      strategy: run.config.strategy,
      dataDir: this.d.updates.dataDir,
      runId: run.id,
      round: round.round,
      baseVersion: round.baseModelVersion,
      version,
      global: this.d.models.readWeights(round.baseModelVersion),
      updates: sources,
    });
    return this.d.models.publish({
      version,
      runId: run.id,
      round: round.round,
      model: run.config.model,
      weights,
      parentVersion: round.baseModelVersion,
      parentSha256: round.baseModelSha256,
      sites: sources.map((u) => ({ siteId: u.siteId, exampleCount: u.exampleCount })),
      strategy: strategyName,
    });
  }

  private afterPublished(run: RunRecord, round: RoundRow): void {
    if (round.round >= run.config.rounds) {
      this.d.repo.updateRun(run.id, { state: 'completed' }, this.iso());
      this.log.info({ runId: run.id, rounds: round.round, version: round.modelVersion }, 'run completed');
      this.events.emit('run', { runId: run.id, state: 'completed' });
      return;
    }
    this.openRound(run, round.round + 1, 1);
  }
}
