import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { parseUpdateHeader, updateHeaderSignedBy } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { sharedParamSpecs, shapeSize, type ModelConfig } from '@fedssl/shared/model';
import {
  PROTOCOL_VERSION,
  uploadBeginSchema,
  uploadChunkSchema,
  uploadCommitSchema,
  type UpdateHeader,
} from '@fedssl/shared/protocol';
import type { Clock } from '../runs/clock';
import type { KeyHolder, SiteDirectory } from '../runs/ports';
import type { AuditSink, RoundEngine } from '../runs/round-engine';
import { formatIssues } from '../runs/run-config';
import type { RunRepository } from '../runs/run.repository';
import type { TaskRow } from '../runs/run.types';
import { chunkCiphertextLength, type UpdateStore } from './update-store';
import type { OpenedUpdate } from './opened-updates';
import { readMaskedUpdate } from '../privacy/secagg-driver';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { rememberingVerifier, signingKeyFor } from '../sites/site-keys';

/** Largest example count an update may claim. */
export const MAX_EXAMPLE_COUNT = 1e9;

/** How many uploads closed with their round are remembered for a precise answer to a late message. */
const MAX_CLOSED_UPLOADS_REMEMBERED = 1024;

/** Default tolerance between an update's signed `createdAt` and the coordinator's clock. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 10 * 60_000;

/**
 * Upper bound of the encoded size of an update for `model`: 8 bytes per shared parameter
 * (wider than every encoding an update uses: float32/float16/int8 weights, 6-byte ring
 * elements of a secure-aggregation masked input), plus generous room per tensor for its
 * manifest entry and a fixed allowance for headers. A signed header may not announce more,
 * so an authenticated site cannot make the coordinator store more than about two models'
 * worth of bytes for one task.
 */
export function maxUpdateBytes(model: ModelConfig): number {
  let bytes = 64 * 1024;
  for (const s of sharedParamSpecs(model))
    bytes += 8 * shapeSize(s.shape) + s.name.length + 16 * s.shape.length + 256;
  return bytes;
}

export interface UploadServiceDeps {
  repo: RunRepository;
  engine: RoundEngine;
  sites: SiteDirectory;
  keys: KeyHolder;
  updates: UpdateStore;
  clock: Clock;
  logger: Logger;
  audit: AuditSink;
  /** Tolerance for an update's `createdAt` against this clock (default {@link DEFAULT_MAX_CLOCK_SKEW_MS}). */
  maxClockSkewMs?: number;
}

/**
 * Ingest outcomes for metrics (no ids, no payload): ciphertext bytes appended, an update
 * accepted, or any step refused with its error code.
 */
export interface UploadEvents {
  bytes: [count: number];
  accepted: [];
  refused: [code: string];
}

/** One upload in progress. Only bookkeeping: the bytes are on disk in the part file. */
interface UploadSession {
  uploadId: string;
  siteId: string;
  taskId: string;
  header: UpdateHeader;
  signature: string;
  nextIndex: number;
  /** Set once a commit verifies it, so a second commit racing the first is refused. */
  committing?: boolean;
}

/**
 * Ingests one update envelope in the order of ARCHITECTURE.md §4: `begin` checks the
 * signed header against the site and its task, `chunk` appends ciphertext to a part file in
 * order (memory bounded by one chunk), `commit` decrypts and checks the content and only
 * then records the update as accepted. Once the header is proven to come from the task's own
 * site, any failure marks the task `rejected`, so a tampered update can never be replayed
 * into the aggregate; failures before that leave the task untouched (a third party cannot
 * burn another site's task).
 */
export class UploadService {
  private readonly log: Logger;
  private readonly sessions = new Map<string, UploadSession>();
  private readonly closedUploads = new Map<string, FedsslError>();
  /** Begun again after acceptance (same envelope): upload id → the accepted update, for commit. */
  private readonly alreadyAccepted = new Map<string, { siteId: string; updateId: string }>();
  /** See {@link UploadEvents}. */
  readonly events = new EventEmitter<UploadEvents>();

  constructor(private readonly d: UploadServiceDeps) {
    this.log = d.logger.child({ context: 'UploadService' });
    // A round that stopped collecting can accept nothing more: its unfinished uploads go.
    // Opened updates are kept for aggregation until their round is published (a failed attempt's
    // may still be aggregated with the retried attempt) or their run ends.
    d.engine.events.on('round', (e) => {
      if (e.state === 'published' || e.state === 'failed') this.dropRound(e.runId, e.round);
      if (e.state === 'published') d.updates.opened.dropRun(e.runId, e.round);
    });
    d.engine.events.on('run', (e) => {
      if (e.state === 'cancelled' || e.state === 'failed' || e.state === 'completed') {
        this.dropRound(e.runId);
        d.updates.opened.dropRun(e.runId);
      }
    });
  }

  /**
   * Forgets the unfinished uploads of a run (of one round when given) and deletes their
   * bytes; a late chunk or commit of one is still told TASK_EXPIRED rather than UPLOAD_UNKNOWN.
   */
  private dropRound(runId: string, round?: number): void {
    for (const s of [...this.sessions.values()]) {
      if (s.header.runId !== runId || (round !== undefined && s.header.round !== round)) continue;
      this.dropSession(s);
      this.closedUploads.set(
        s.uploadId,
        new FedsslError(
          'TASK_EXPIRED',
          `task ${s.taskId} belongs to a round that is no longer collecting updates`,
        ),
      );
      // Bounded: only recent closures are remembered.
      if (this.closedUploads.size > MAX_CLOSED_UPLOADS_REMEMBERED)
        this.closedUploads.delete(this.closedUploads.keys().next().value!);
    }
  }

  /** UPLOAD_UNKNOWN, or why the upload was closed when that is remembered. */
  private unknownUpload(uploadId: string): FedsslError {
    return (
      this.closedUploads.get(uploadId) ??
      new FedsslError('UPLOAD_UNKNOWN', `upload ${uploadId} is not in progress for this site`)
    );
  }

  /**
   * Starts, or resumes (same task and signature), an upload for the authenticated site.
   * @returns the upload id and the next chunk index expected.
   */
  async begin(connSiteId: string, msg: unknown): Promise<{ uploadId: string; nextIndex: number }> {
    const parsed = uploadBeginSchema.safeParse(msg);
    if (!parsed.success) {
      return this.refuse(
        connSiteId,
        undefined,
        new FedsslError('PROTOCOL_INVALID_MESSAGE', formatIssues(parsed.error.issues)),
      );
    }
    const { header, signature } = parsed.data;
    const taskId = header.taskId;
    try {
      const site = await this.d.sites.get(header.siteId);
      if (!site || site.signingPublicKey === '')
        throw new FedsslError('SITE_NOT_FOUND', `site ${header.siteId} is not registered`);
      // The current key, or a replaced one in its grace period (SITE_KEY_EXPIRED after it).
      const signedBy = rememberingVerifier((pk) => updateHeaderSignedBy(header, signature, pk));
      const signer = signingKeyFor(site, this.d.clock.now(), signedBy);
      // verifyUpdateHeader's checks, in its order, with the signature's answer remembered from
      // the key choice above: one Ed25519 verification per key tried, not one more for the winner.
      parseUpdateHeader(header);
      if (!signedBy(signer))
        throw new FedsslError(
          'ENVELOPE_SIGNATURE_INVALID',
          'update header signature does not verify against the site key',
        );
      if (header.protocolVersion !== PROTOCOL_VERSION)
        throw new FedsslError(
          'PROTOCOL_VERSION_MISMATCH',
          `update header is protocol version ${header.protocolVersion}, this build speaks ${PROTOCOL_VERSION}`,
        );
      if (site.status === 'revoked') throw new FedsslError('SITE_REVOKED', `site ${site.id} is revoked`);
      if (site.status !== 'enrolled')
        throw new FedsslError('SITE_AUTH_FAILED', `site ${site.id} is not enrolled`);
      if (connSiteId !== header.siteId) {
        throw new FedsslError(
          'SITE_AUTH_FAILED',
          'update header names a different site than the authenticated connection',
        );
      }
      const task = await this.d.repo.getTask(taskId);
      if (
        !task ||
        task.siteId !== header.siteId ||
        task.runId !== header.runId ||
        task.round !== header.round
      ) {
        throw new FedsslError(
          'TASK_UNKNOWN',
          `task ${taskId} was not issued to this site for run ${header.runId} round ${header.round}`,
        );
      }
      // The very envelope already accepted, sent again because its commit answer was lost (a
      // coordinator crash or a cut link): answer it accepted again; nothing is stored twice.
      if (task.state === 'accepted') {
        const accepted = await this.d.repo.getUpdateByTask(task.id);
        if (accepted?.signature === signature) return this.beginAccepted(header, signature, accepted.id);
      }
      const closed = await this.d.engine.taskAnswerability(task);
      if (closed) throw new FedsslError(closed.code, closed.message);
      // From here the header is authentic and about this site's own open task: failures reject it.
      const run = await this.d.repo.getRun(task.runId);
      try {
        this.checkAgainstTask(header, task);
        if (run && header.plaintextBytes > maxUpdateBytes(run.config.model)) {
          throw new FedsslError(
            'UPDATE_TENSORS_INVALID',
            `update declares ${header.plaintextBytes} bytes; an update of this run's model has at most ${maxUpdateBytes(run.config.model)}`,
          );
        }
      } catch (e) {
        await this.reject(task, e);
        throw e;
      }
      for (const s of this.sessions.values()) {
        if (s.taskId !== taskId) continue;
        if (s.signature === signature) {
          this.log.info(
            { siteId: s.siteId, taskId, uploadId: s.uploadId, nextIndex: s.nextIndex },
            'upload resumed',
          );
          return { uploadId: s.uploadId, nextIndex: s.nextIndex };
        }
        // A new envelope for the same task replaces an unfinished one.
        this.dropSession(s);
      }
      // After a coordinator restart the same envelope finds its part file and resumes.
      const uploadId = this.d.updates.uploadIdFor(taskId, signature);
      const nextIndex = this.d.updates.openPart(uploadId, header);
      this.sessions.set(uploadId, { uploadId, siteId: header.siteId, taskId, header, signature, nextIndex });
      this.log.info(
        { siteId: header.siteId, taskId, uploadId, chunks: header.chunkCount, nextIndex },
        'upload begun',
      );
      return { uploadId, nextIndex };
    } catch (e) {
      return this.refuse(connSiteId, taskId, e);
    }
  }

  /** A begin of an already-accepted envelope: no chunks are needed, its commit answers the update id. */
  private beginAccepted(
    header: UpdateHeader,
    signature: string,
    updateId: string,
  ): { uploadId: string; nextIndex: number } {
    const uploadId = this.d.updates.uploadIdFor(header.taskId, signature);
    this.alreadyAccepted.set(uploadId, { siteId: header.siteId, updateId });
    if (this.alreadyAccepted.size > MAX_CLOSED_UPLOADS_REMEMBERED)
      this.alreadyAccepted.delete(this.alreadyAccepted.keys().next().value!);
    this.log.info(
      { siteId: header.siteId, taskId: header.taskId, updateId },
      'upload begun again after acceptance: answering accepted',
    );
    return { uploadId, nextIndex: header.chunkCount };
  }

  private checkAgainstTask(header: UpdateHeader, task: TaskRow): void {
    if (header.taskNonce !== task.nonce)
      throw new FedsslError('UPDATE_TASK_NONCE_MISMATCH', 'update header does not echo the task nonce');
    if (header.baseModelHash !== task.modelHash) {
      throw new FedsslError(
        'UPDATE_BASE_MODEL_MISMATCH',
        `update was trained from another model than ${task.modelVersion}`,
      );
    }
    if (
      !Number.isInteger(header.exampleCount) ||
      header.exampleCount < 1 ||
      header.exampleCount > MAX_EXAMPLE_COUNT
    ) {
      throw new FedsslError(
        'UPDATE_EXAMPLE_COUNT_INVALID',
        `exampleCount must be an integer in [1, ${MAX_EXAMPLE_COUNT}], got ${header.exampleCount}`,
      );
    }
    // Created neither before its task was issued nor after now, each within the tolerance:
    // a resumed upload may be old, but never older than its task.
    const skew = this.d.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
    const created = Date.parse(header.createdAt);
    if (!(created <= this.d.clock.now() + skew) || !(created >= Date.parse(task.issuedAt) - skew)) {
      throw new FedsslError(
        'UPDATE_CLOCK_SKEW',
        `update createdAt ${header.createdAt} is outside [task issued ${task.issuedAt}, now ${new Date(this.d.clock.now()).toISOString()}] ± ${skew / 1000} s: check the site's clock`,
      );
    }
  }

  /**
   * Appends chunk `index` to the upload's part file; chunks must come strictly in order.
   * @throws FedsslError UPLOAD_UNKNOWN; UPLOAD_OUT_OF_ORDER (details.expected); ENVELOPE_CHUNK_INVALID for a wrong length.
   */
  async chunk(connSiteId: string, msg: unknown): Promise<{ nextIndex: number }> {
    const parsed = uploadChunkSchema.safeParse(msg);
    if (!parsed.success) {
      return this.refuse(
        connSiteId,
        undefined,
        new FedsslError('PROTOCOL_INVALID_MESSAGE', formatIssues(parsed.error.issues)),
      );
    }
    const { uploadId, index, data } = parsed.data;
    const s = this.sessions.get(uploadId);
    if (!s || s.siteId !== connSiteId)
      return this.refuse(connSiteId, undefined, this.unknownUpload(uploadId));
    if (index !== s.nextIndex) {
      return this.refuse(
        connSiteId,
        s.taskId,
        new FedsslError('UPLOAD_OUT_OF_ORDER', `expected chunk ${s.nextIndex}, got chunk ${index}`, {
          expected: s.nextIndex,
          index,
        }),
      );
    }
    if (index >= s.header.chunkCount || data.byteLength !== chunkCiphertextLength(s.header, index)) {
      const e = new FedsslError('ENVELOPE_CHUNK_INVALID', `chunk ${index} does not fit the signed header`, {
        index,
      });
      await this.fail(s, e);
    }
    try {
      this.d.updates.writeChunk(uploadId, s.header, index, data);
    } catch (e) {
      return this.writeFailed(s, e);
    }
    s.nextIndex++;
    this.events.emit('bytes', data.byteLength);
    return { nextIndex: s.nextIndex };
  }

  /**
   * Verifies the complete envelope and, only if everything checks, stores it as the
   * task's accepted update and tells the round engine.
   */
  async commit(connSiteId: string, msg: unknown): Promise<{ accepted: true; updateId: string }> {
    const parsed = uploadCommitSchema.safeParse(msg);
    if (!parsed.success) {
      return this.refuse(
        connSiteId,
        undefined,
        new FedsslError('PROTOCOL_INVALID_MESSAGE', formatIssues(parsed.error.issues)),
      );
    }
    const done = this.alreadyAccepted.get(parsed.data.uploadId);
    if (done && done.siteId === connSiteId) {
      this.alreadyAccepted.delete(parsed.data.uploadId);
      return { accepted: true, updateId: done.updateId };
    }
    const s = this.sessions.get(parsed.data.uploadId);
    if (!s || s.siteId !== connSiteId)
      return this.refuse(connSiteId, undefined, this.unknownUpload(parsed.data.uploadId));
    if (s.nextIndex !== s.header.chunkCount) {
      return this.refuse(
        connSiteId,
        s.taskId,
        new FedsslError(
          'ENVELOPE_CHUNK_COUNT',
          `update incomplete: received ${s.nextIndex} of ${s.header.chunkCount} chunks`,
          {
            expected: s.nextIndex,
          },
        ),
      );
    }
    if (s.committing) {
      return this.refuse(
        connSiteId,
        s.taskId,
        new FedsslError('UPLOAD_UNKNOWN', `upload ${s.uploadId} is already being committed`),
      );
    }
    s.committing = true;
    const task = await this.d.repo.getTask(s.taskId);
    const closed = task
      ? await this.d.engine.taskAnswerability(task)
      : { code: 'TASK_UNKNOWN' as const, message: `task ${s.taskId} vanished` };
    if (!task || closed) {
      this.dropSession(s);
      return this.refuse(connSiteId, s.taskId, new FedsslError(closed!.code, closed!.message));
    }
    const run = (await this.d.repo.getRun(task.runId))!;
    let opened: OpenedUpdate;
    try {
      const plain = this.d.updates.openEnvelope(
        this.d.updates.partPath(s.uploadId),
        s.header,
        this.d.keys.boxSecretKeyFor(s.header),
      );
      // A masked update (secure aggregation) is only checked for shape: its values look random.
      if (run.config.privacy?.secureAggregation) {
        readMaskedUpdate(plain, run.config.model);
        opened = { kind: 'masked', plain };
      } else {
        opened = {
          kind: 'delta',
          tensors: this.d.updates.decodeOpened(plain, run.config.model, run.config.maxUpdateNorm),
        };
      }
    } catch (e) {
      return this.fail(s, e);
    }
    const updateId = `upd-${randomBytes(12).toString('hex')}`;
    let paths: ReturnType<UpdateStore['promote']>;
    try {
      paths = this.d.updates.promote(s.uploadId, task.runId, task.round, task.siteId, s.header, s.signature);
    } catch (e) {
      return this.writeFailed(s, e);
    }
    this.sessions.delete(s.uploadId);
    const now = new Date(this.d.clock.now()).toISOString();
    // Kept for aggregation, which then need not open the file again. Put before the row exists
    // (nothing can ask for this id yet), so an aggregation right after the commit finds it.
    this.d.updates.opened.put(updateId, task.runId, task.round, opened);
    // The accepted answer, the update row and its audit entry commit together or not at all.
    await this.d.repo
      .transaction(async () => {
        if (!(await this.d.repo.answerTask(task.id, 'accepted', null, now))) {
          throw new FedsslError('TASK_ALREADY_ANSWERED', `task ${task.id} was already answered`);
        }
        await this.d.repo.insertUpdate({
          id: updateId,
          taskId: task.id,
          runId: task.runId,
          round: task.round,
          attempt: task.attempt,
          siteId: task.siteId,
          exampleCount: s.header.exampleCount,
          metrics: s.header.metrics,
          ...paths,
          receivedAt: now,
          signature: s.signature,
        });
        await this.d.audit.append(`site:${task.siteId}`, 'update.accepted', task.id, {
          runId: task.runId,
          round: task.round,
          updateId,
          exampleCount: s.header.exampleCount,
        });
      })
      .catch((e: unknown) => {
        this.d.updates.opened.take(updateId);
        throw e;
      });
    this.log.info(
      { siteId: task.siteId, taskId: task.id, updateId, exampleCount: s.header.exampleCount },
      'update accepted',
    );
    this.events.emit('accepted');
    await this.d.engine.updateAccepted(task.id);
    return { accepted: true, updateId };
  }

  /** Forgets unfinished uploads of a site (e.g. the site was revoked). */
  dropSite(siteId: string): void {
    for (const s of [...this.sessions.values()]) if (s.siteId === siteId) this.dropSession(s);
  }

  private dropSession(s: UploadSession): void {
    this.sessions.delete(s.uploadId);
    this.d.updates.removePart(s.uploadId);
  }

  /** An authentic envelope failed a check: delete its bytes, mark the task rejected, throw. */
  private async fail(s: UploadSession, e: unknown): Promise<never> {
    this.dropSession(s);
    const task = await this.d.repo.getTask(s.taskId);
    if (task) await this.reject(task, e);
    return this.refuse(s.siteId, s.taskId, e);
  }

  private async reject(task: TaskRow, e: unknown): Promise<void> {
    const reason = isFedsslErrorLike(e) ? `${e.code}: ${e.message}` : 'update could not be verified';
    await this.d.engine.answer(task.id, 'rejected', reason);
  }

  /**
   * A write of the upload failed. Disk full: the session and the chunks already stored stay,
   * so the agent's retry resumes where it stopped once space is freed.
   */
  private writeFailed(s: UploadSession, e: unknown): never {
    s.committing = false;
    if (isFedsslErrorLike(e) && e.code === 'STORAGE_FULL')
      this.log.error({ siteId: s.siteId, taskId: s.taskId, uploadId: s.uploadId }, 'data directory full');
    return this.refuse(s.siteId, s.taskId, e);
  }

  /** Logs a refused step (ids and code only, never payload) and throws a coded error. */
  private refuse(siteId: string, taskId: string | undefined, e: unknown): never {
    const err = isFedsslErrorLike(e)
      ? e
      : new FedsslError('PROTOCOL_INVALID_MESSAGE', 'update could not be processed');
    this.log.warn({ siteId, taskId, code: err.code }, 'update refused');
    this.events.emit('refused', err.code);
    if (!isFedsslErrorLike(e))
      this.log.error({ siteId, taskId, err: e }, 'unexpected error while ingesting an update');
    throw err;
  }
}
