import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { encodeWeights } from '@fedssl/shared/codec';
import { sealUpdate, sha256Hex, verifySignedTask } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  PROTOCOL_VERSION,
  taskCancelSchema,
  type Ack,
  type AgentStatus,
  type SecAggAnswer,
  type Task,
} from '@fedssl/shared/protocol';
import { appendLedger } from '../audit/ledger';
import type { TrainingDataset } from '../data/dataset';
import { deltaFromGlobal, fedemaInit } from '../train/fedema';
import type { LocalState } from '../train/local-state';
import type { TrainProgress, TrainRoundArgs, TrainRoundResult } from '../train/trainer';
import { systemClock, type Clock } from './backoff';
import type { LocalStateStore } from './local-state-store';
import { downloadModel } from './model-download';
import type { Outbox, OutboxEntry, UploadFacts } from './outbox';
import { applyTaskPrivacy } from '../privacy/task-privacy';
import { SecAggParticipant } from '../privacy/secagg-participant';
import type { GaussianSampler } from '@fedssl/shared/privacy';
import { uploadUpdate } from './upload';
import { asCodedError, type Uplink } from './uplink';

/** How one task ended. */
export interface TaskOutcome {
  taskId: string;
  runId: string;
  round: number;
  status: 'accepted' | 'rejected' | 'failed' | 'cancelled';
  updateId?: string;
  error?: { code: string; message: string };
}

/** Dependencies of {@link TaskRunner} (all injected so tests can use strict fakes). */
export interface TaskRunnerOptions {
  uplink: Uplink;
  siteId: string;
  /** The coordinator keys pinned at enrollment. */
  coordinator: { signingPublicKey: Uint8Array; boxPublicKey: Uint8Array };
  siteSigningSecretKey: Uint8Array;
  /** Plaintext bytes per encrypted update chunk. */
  uploadChunkSize: number;
  /** Agent home (for the ledger). */
  home: string;
  /** The site's training data (loaded once, cached by the caller). */
  dataset: () => Promise<TrainingDataset>;
  train: (args: TrainRoundArgs) => Promise<TrainRoundResult>;
  localStates: LocalStateStore;
  /**
   * Where sealed updates wait until the coordinator has answered them (see outbox.ts).
   * Without one, an agent restarted mid-upload trains the task again.
   */
  outbox?: Outbox;
  logger: Logger;
  clock?: Clock;
  /** Minimum time between two `task:progress` messages (default 2 s). */
  progressIntervalMs?: number;
  onState?: (state: AgentStatus['state']) => void;
  onOutcome?: (outcome: TaskOutcome) => void;
  /** Noise source for differential privacy (default: the OS CSPRNG); tests pass a seeded one. */
  dpSampler?: () => GaussianSampler;
}

/**
 * Seed for a task's augmentations and batch order. Derived from what pins the work itself,
 * not from the task's random nonce: the base model hash (which already pins the run config
 * and every earlier round), the site and the round. So the same work gives the same update
 * when it is offered again (a new task after a coordinator restart or a retried round) and in
 * two runs of the same config on the same data — which is what makes a resumed run
 * bit-identical to an uninterrupted one. It only seeds augmentation and batching; nothing
 * secret depends on it.
 */
export function taskSeed(task: Pick<Task, 'modelHash' | 'siteId' | 'round'>): number {
  return createHash('sha256')
    .update(`fedssl-task-seed\n${task.modelHash}\n${task.siteId}\n${task.round}`)
    .digest()
    .readUInt32BE(0);
}

/** How long a superseded task may take to end by itself before it is stopped. */
const SUPERSEDE_GRACE_MS = 5000;

function errorOf(e: unknown): { code: string; message: string } {
  const coded = asCodedError(e);
  if (coded) return { code: coded.code, message: coded.message.slice(0, 1000) };
  return { code: 'TRAINING_FAILED', message: (e instanceof Error ? e.message : String(e)).slice(0, 1000) };
}

/**
 * Takes tasks from the coordinator, one at a time: verifies each offer with the pinned
 * coordinator key before acknowledging it, downloads and verifies the global model, trains,
 * seals the delta to the coordinator and uploads it, recording both transfers in the
 * ledger. A task that fails verification is refused in the ack and never trained on.
 */
export class TaskRunner {
  private current: { task: Task; abort: AbortController; done: Promise<void> } | null = null;
  private readonly finished = new Set<string>();
  /** Set by {@link stop}: an upload aborted by shutdown stays in the outbox for the next start. */
  private stopping = false;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly secAgg: SecAggParticipant;
  /**
   * Verified secure-aggregation tasks, newest last (a few): recorded at the offer, before the
   * task may start (it can wait for a superseded one), since the coordinator sets up masks at once.
   */
  private readonly secureTasks: string[] = [];

  constructor(private readonly opts: TaskRunnerOptions) {
    this.log = opts.logger.child({ component: 'TaskRunner' });
    this.clock = opts.clock ?? systemClock;
    this.secAgg = new SecAggParticipant(opts.siteId, (taskId) => this.secureTasks.includes(taskId), this.log);
  }

  /** Handle `secagg:step` (docs/privacy.md): answered in the ack. */
  handleSecAggStep(msg: unknown, ack: (res: Ack<SecAggAnswer>) => void): void {
    void this.secAgg.handleStep(msg).then(ack);
  }

  /** The task being worked on, if any. */
  get currentTaskId(): string | null {
    return this.current?.task.taskId ?? null;
  }

  /**
   * Handle `task:offer`. Acks `{ok:true}` only for a task signed by the pinned coordinator
   * key, addressed to this site, before its deadline, while no other task runs.
   */
  handleOffer(msg: unknown, ack: (res: Ack) => void): void {
    let task: Task;
    try {
      task = this.verifyOffer(msg);
      if (task.privacy?.secureAggregation && !this.secureTasks.includes(task.taskId))
        this.secureTasks.splice(0, Math.max(0, this.secureTasks.push(task.taskId) - 8));
    } catch (e) {
      const error = errorOf(e);
      this.log.warn({ code: error.code }, 'task offer refused');
      ack({ ok: false, error });
      return;
    }
    if (this.current?.task.taskId === task.taskId) {
      ack({ ok: true }); // re-offer after a reconnection: already on it
      return;
    }
    if (this.finished.has(task.taskId)) {
      ack({
        ok: false,
        error: {
          code: 'TASK_ALREADY_ANSWERED',
          message: `task ${task.taskId} was already handled by this agent`,
        },
      });
      return;
    }
    const busy = this.current;
    if (busy && busy.task.runId === task.runId && busy.task.round > task.round) {
      ack({
        ok: false,
        error: { code: 'AGENT_BUSY', message: `agent is busy with task ${busy.task.taskId}` },
      });
      return;
    }
    if (busy) {
      // The coordinator offers a site a new task only once it holds the current one as done
      // (a later round, a new attempt of the round, or another run: it never offers a site
      // with an open task). Typically our commit was processed and its answer is still on the
      // way, or a retry waits out a reconnection. Let the current task end by itself for a
      // short grace, then stop it, and take the new one instead of refusing it.
      this.log.info({ taskId: busy.task.taskId, next: task.taskId }, 'current task superseded');
      void this.clock
        .sleep(SUPERSEDE_GRACE_MS, busy.abort.signal)
        .then(() =>
          busy.abort.abort(new FedsslError('TRAINING_ABORTED', `superseded by task ${task.taskId}`)),
        )
        .catch(() => undefined);
      void busy.done.then(() => this.handleOffer(msg, ack));
      return;
    }
    ack({ ok: true });
    const abort = new AbortController();
    const done = this.run(task, abort.signal).finally(() => {
      this.finished.add(task.taskId);
      this.current = null;
      this.opts.onState?.('idle');
    });
    this.current = { task, abort, done };
  }

  private verifyOffer(msg: unknown): Task {
    const task = verifySignedTask(
      msg as Parameters<typeof verifySignedTask>[0],
      this.opts.coordinator.signingPublicKey,
    );
    if (task.siteId !== this.opts.siteId) {
      throw new FedsslError(
        'TASK_NOT_FOR_THIS_SITE',
        `task ${task.taskId} is addressed to site ${task.siteId}, this is ${this.opts.siteId}`,
      );
    }
    if (Date.parse(task.deadline) <= this.clock.now()) {
      throw new FedsslError('TASK_EXPIRED', `task ${task.taskId} deadline ${task.deadline} has passed`);
    }
    return task;
  }

  /** Handle `task:cancel`: abort the task if it is the current one. */
  handleCancel(msg: unknown): void {
    const parsed = taskCancelSchema.safeParse(msg);
    if (!parsed.success) return;
    if (this.current?.task.taskId === parsed.data.taskId) {
      this.log.info(
        { taskId: parsed.data.taskId, reason: parsed.data.reason },
        'task cancelled by coordinator',
      );
      this.current.abort.abort(new FedsslError('TRAINING_ABORTED', `cancelled: ${parsed.data.reason}`));
    }
  }

  /** Resolves when no task is running. */
  async idle(): Promise<void> {
    while (this.current) await this.current.done;
  }

  /** Abort the current task (shutdown) and wait for it to wind down. */
  async stop(reason = 'agent shutting down'): Promise<void> {
    this.stopping = true;
    this.current?.abort.abort(new FedsslError('TRAINING_ABORTED', reason));
    await this.idle();
  }

  private async run(task: Task, signal: AbortSignal): Promise<void> {
    const o = this.opts;
    const log = this.log.child({ taskId: task.taskId, runId: task.runId, round: task.round });
    let phase: 'download' | 'train' | 'upload' = 'download';
    let uploadFacts: UploadFacts | null = null;
    const outcome = (status: TaskOutcome['status'], extra: Partial<TaskOutcome> = {}) =>
      o.onOutcome?.({ taskId: task.taskId, runId: task.runId, round: task.round, status, ...extra });
    try {
      const pending = await this.pendingUpload(task, log);
      const entry = pending ?? (await this.downloadAndTrain(task, signal, log, () => (phase = 'train')));
      uploadFacts = entry.facts;

      phase = 'upload';
      o.onState?.('uploading');
      const up = await uploadUpdate({
        uplink: o.uplink,
        sealed: entry.sealed,
        logger: log,
        signal,
        clock: this.clock,
        deadlineMs: Date.parse(task.deadline),
      });
      await this.ledgerUpload(task, uploadFacts, up.bytesSent, {
        accepted: true,
        updateId: up.updateId,
        ...(pending ? { resumedFromChunk: up.resumedFrom } : {}),
      });
      await this.forget(task, log);
      log.info(
        {
          updateId: up.updateId,
          bytesSent: up.bytesSent,
          exampleCount: entry.facts.exampleCount,
          resumedFrom: up.resumedFrom,
          fromOutbox: pending !== undefined,
        },
        'update accepted',
      );
      outcome('accepted', { updateId: up.updateId });
    } catch (e) {
      const error = errorOf(e);
      if (signal.aborted) {
        log.info({ phase }, 'task aborted');
        // Bytes may have left before the abort: the ledger records every upload attempt.
        if (uploadFacts)
          await this.ledgerUpload(task, uploadFacts, uploadFacts.bytes, { accepted: false, error }).catch(
            (le: unknown) => log.error({ err: (le as Error).message }, 'could not write the ledger'),
          );
        // Cancelled by the coordinator: the round moved on and the update can never be
        // answered. Aborted by shutdown: keep it, the next start resumes it.
        if (!this.stopping) await this.forget(task, log);
        outcome('cancelled', { error });
        return;
      }
      log.error({ phase, code: error.code, err: error.message }, 'task failed');
      // A refused commit means the coordinator checked and rejected the update.
      const coded = asCodedError(e);
      const rejected =
        phase === 'upload' && coded?.details?.event !== undefined && coded.code !== 'COORDINATOR_UNREACHABLE';
      // The coordinator refused it for good: nothing to resume. Unreachable: keep it for a re-offer.
      if (rejected) await this.forget(task, log);
      if (uploadFacts) {
        await this.ledgerUpload(task, uploadFacts, uploadFacts.bytes, { accepted: false, error }).catch(
          (le: unknown) => log.error({ err: (le as Error).message }, 'could not write the ledger'),
        );
      }
      o.uplink.notify('task:failed', {
        taskId: task.taskId,
        code: error.code.slice(0, 64),
        message: error.message,
      });
      outcome(rejected ? 'rejected' : 'failed', { error });
    }
  }

  /**
   * A sealed update for this task left in the outbox by an earlier process (killed or
   * stopped mid-upload): upload it as it is. Its local state is written again, in case the
   * process died between sealing and saving it.
   */
  private async pendingUpload(task: Task, log: Logger): Promise<OutboxEntry | undefined> {
    const outbox = this.opts.outbox;
    if (!outbox) return undefined;
    try {
      const pruned = await outbox.prune(this.clock.now());
      if (pruned.length > 0) log.info({ tasks: pruned }, 'expired updates removed from the outbox');
      const entry = await outbox.get(task.taskId);
      if (!entry) return undefined;
      if (
        entry.sealed.header.taskNonce !== task.nonce ||
        entry.sealed.header.baseModelHash !== task.modelHash
      ) {
        log.warn('outbox entry does not match the task offered, training again');
        await outbox.remove(task.taskId);
        return undefined;
      }
      if (entry.localState) await this.opts.localStates.save(task.runId, entry.localState, entry.round);
      log.info({ chunks: entry.sealed.chunks.length }, 'resuming a sealed update from the outbox');
      return entry;
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'outbox unreadable, training again');
      return undefined;
    }
  }

  private async forget(task: Task, log: Logger): Promise<void> {
    await this.opts.outbox
      ?.remove(task.taskId)
      .catch((e: unknown) => log.error({ err: (e as Error).message }, 'could not clear the outbox entry'));
  }

  /** Downloads the global model, trains, seals the delta and puts it in the outbox. */
  private async downloadAndTrain(
    task: Task,
    signal: AbortSignal,
    log: Logger,
    onTraining: () => void,
  ): Promise<OutboxEntry> {
    const o = this.opts;
    o.onState?.('downloading');
    const model = await downloadModel({
      uplink: o.uplink,
      task,
      coordinatorSigningKey: o.coordinator.signingPublicKey,
      logger: log,
      signal,
      clock: this.clock,
    });
    await appendLedger(o.home, {
      kind: 'download',
      time: new Date(this.clock.now()).toISOString(),
      runId: task.runId,
      round: task.round,
      taskId: task.taskId,
      modelVersion: task.modelVersion,
      modelSha256: model.sha256,
      bytes: model.bytes,
      verified: true,
    });

    onTraining();
    o.onState?.('training');
    const dataset = await o.dataset();
    // The state from before this round, also for a retried attempt of it: what an earlier
    // attempt produced is one round ahead of every other site and of the global model.
    let localState: LocalState | undefined = await o.localStates.load(task.runId, task.round);
    if (localState && localState.metadataClasses !== dataset.metadataClasses) {
      log.warn(
        { saved: localState.metadataClasses, now: dataset.metadataClasses },
        'data changed since the last round: fresh metadata head',
      );
      localState = undefined;
    }
    const interval = o.progressIntervalMs ?? 2000;
    let lastProgress = -Infinity;
    const onProgress = (p: TrainProgress) => {
      const now = this.clock.now();
      if (p.step < p.totalSteps && now - lastProgress < interval) return;
      lastProgress = now;
      if (Number.isFinite(p.loss))
        o.uplink.notify('task:progress', {
          taskId: task.taskId,
          step: p.step,
          totalSteps: p.totalSteps,
          loss: p.loss,
        });
    };
    // FedEMA: start from an EMA of the previous local model and the global one.
    const fedema =
      task.training.localUpdate === 'fedema'
        ? fedemaInit(model.weights, localState?.online, task.training.fedemaScaler)
        : null;
    if (fedema) log.info({ mu: fedema.mu, divergence: fedema.divergence }, 'fedema local update');
    const trained = await o.train({
      model: task.model,
      training: task.training,
      globalWeights: fedema ? fedema.weights : model.weights,
      dataset,
      seed: taskSeed(task),
      ...(localState ? { localState } : {}),
      onProgress,
      signal,
      logger: log,
    });
    // The delta stays relative to the global model the coordinator folds it into.
    const result = fedema
      ? {
          ...trained,
          delta: deltaFromGlobal(trained.weights, model.weights),
          metrics: { ...trained.metrics, fedemaMu: fedema.mu, fedemaDivergence: fedema.divergence },
        }
      : trained;
    const nextLocalState = fedema ? { ...trained.localState, online: trained.weights } : trained.localState;
    signal.throwIfAborted();

    // Privacy before sealing: what leaves the site is the clipped, noised delta (ledgered).
    const priv = applyTaskPrivacy(task, result.delta, log, o.dpSampler?.());
    if (priv.record?.dp) {
      await appendLedger(o.home, {
        kind: 'privacy',
        time: new Date(this.clock.now()).toISOString(),
        runId: task.runId,
        round: task.round,
        taskId: task.taskId,
        dp: priv.record.dp,
      });
    }
    // The run chooses the element type (float32 exact, float16 or int8 with a per-tensor scale).
    // Secure aggregation: seal exampleCount·Δ masked, once the masks are set up (never in clear).
    let plaintext: Uint8Array;
    if (task.privacy?.secureAggregation) {
      await this.secAgg.ready(task.taskId, signal);
      plaintext = this.secAgg.maskUpdate(task.taskId, priv.delta, result.exampleCount);
    } else plaintext = encodeWeights(priv.delta, { dtype: task.training.updateEncoding });
    const metrics: Record<string, number> = {};
    for (const [k, v] of Object.entries(result.metrics)) if (Number.isFinite(v)) metrics[k] = v;
    const sealed = sealUpdate({
      plaintext,
      fields: {
        protocolVersion: PROTOCOL_VERSION,
        siteId: o.siteId,
        runId: task.runId,
        round: task.round,
        taskId: task.taskId,
        taskNonce: task.nonce,
        baseModelHash: task.modelHash,
        exampleCount: result.exampleCount,
        metrics,
        createdAt: new Date(this.clock.now()).toISOString(),
      },
      chunkSize: o.uploadChunkSize,
      siteSigningSecretKey: o.siteSigningSecretKey,
      coordinatorBoxPublicKey: o.coordinator.boxPublicKey,
    });
    const facts: UploadFacts = {
      plaintextSha256: sha256Hex(plaintext),
      ciphertextSha512: sealed.header.ciphertextSha512,
      tensors: result.delta.map((t) => t.name),
      exampleCount: result.exampleCount,
      bytes:
        sealed.chunks.reduce((n, c) => n + c.byteLength, 0) +
        Buffer.byteLength(JSON.stringify(sealed.header)) +
        sealed.signature.length,
    };
    const entry: OutboxEntry = {
      taskId: task.taskId,
      runId: task.runId,
      round: task.round,
      modelVersion: task.modelVersion,
      deadline: task.deadline,
      sealed,
      facts,
      localState: nextLocalState,
    };
    // Outbox first, then local state: whichever crash comes, a restart either trains again
    // from the old local state (nothing sealed yet) or resumes this update and re-saves it.
    await o.outbox?.put(entry);
    await o.localStates.save(task.runId, nextLocalState, task.round);
    return entry;
  }

  private async ledgerUpload(
    task: Task,
    facts: { plaintextSha256: string; ciphertextSha512: string; tensors: string[]; exampleCount: number },
    bytesSent: number,
    result:
      | { accepted: true; updateId: string; resumedFromChunk?: number }
      | { accepted: false; error: { code: string; message: string } },
  ): Promise<void> {
    await appendLedger(this.opts.home, {
      kind: 'upload',
      time: new Date(this.clock.now()).toISOString(),
      runId: task.runId,
      round: task.round,
      taskId: task.taskId,
      modelVersion: task.modelVersion,
      bytesSent,
      plaintextSha256: facts.plaintextSha256,
      ciphertextSha512: facts.ciphertextSha512,
      tensors: facts.tensors,
      exampleCount: facts.exampleCount,
      ...result,
    });
  }
}
