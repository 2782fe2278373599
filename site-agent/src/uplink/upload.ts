import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import type { SealedUpdate } from '@fedssl/shared/crypto';
import { retry, systemClock, type Clock } from './backoff';
import { asCodedError, type Uplink } from './uplink';

/** What an upload achieved. */
export interface UploadResult {
  uploadId: string;
  updateId: string;
  /** Ciphertext bytes sent in this process (resumed chunks are not re-sent) plus the header. */
  bytesSent: number;
  /** The chunk the coordinator asked for first: > 0 when it already held the ones before. */
  resumedFrom: number;
}

/**
 * Refusals worth waiting out: the link is down, or the coordinator cannot store bytes right
 * now (its data directory is full). It keeps what it acknowledged, so a retry resumes.
 */
const RETRYABLE = new Set(['COORDINATOR_UNREACHABLE', 'STORAGE_FULL']);

/**
 * Send a sealed update: `update:begin` (answers where to resume), the remaining
 * `update:chunk`s in order, then `update:commit`. When the connection drops, waits for
 * the client to re-authenticate and begins again with the same signed header: the
 * coordinator answers the same upload and the next index it still needs, so only missing
 * chunks are re-sent. A coordinator whose disk is full (STORAGE_FULL) is waited out the same
 * way. Other coordinator refusals (coded errors) are not retried. With `deadlineMs` (the
 * task's deadline) retries go on until then; without it, `attempts` (default 6) bounds them.
 * @throws FedsslError with the coordinator's code on refusal, COORDINATOR_UNREACHABLE when retries run out.
 */
export async function uploadUpdate(args: {
  uplink: Uplink;
  sealed: SealedUpdate;
  logger: Logger;
  signal?: AbortSignal;
  attempts?: number;
  clock?: Clock;
  random?: () => number;
  deadlineMs?: number;
}): Promise<UploadResult> {
  const { uplink, sealed } = args;
  const headerBytes = Buffer.byteLength(JSON.stringify(sealed.header)) + sealed.signature.length;
  let bytesSent = headerBytes;
  const count = sealed.chunks.length;
  const clock = args.clock ?? systemClock;
  let resumedFrom: number | null = null;
  return retry(
    async (attempt) => {
      await uplink.ready(args.signal);
      const begun = await uplink.request('update:begin', {
        header: sealed.header,
        signature: sealed.signature,
      });
      let next = begun.nextIndex;
      resumedFrom ??= next;
      if (attempt > 0 || next > 0)
        args.logger.info({ uploadId: begun.uploadId, resumeAt: next, chunks: count }, 'resuming upload');
      while (next < count) {
        args.signal?.throwIfAborted();
        if (!Number.isInteger(next) || next < 0)
          throw new FedsslError('PROTOCOL_INVALID_MESSAGE', `coordinator asked for chunk ${next}`);
        const data = sealed.chunks[next]! as Uint8Array<ArrayBuffer>;
        const res = await uplink.request('update:chunk', { uploadId: begun.uploadId, index: next, data });
        bytesSent += data.byteLength;
        // The coordinator is the authority on what it has; it may skip ahead (already stored).
        if (!Number.isInteger(res.nextIndex) || res.nextIndex <= next) {
          throw new FedsslError(
            'PROTOCOL_INVALID_MESSAGE',
            `coordinator answered nextIndex ${res.nextIndex} after chunk ${next}`,
          );
        }
        next = res.nextIndex;
      }
      const done = await uplink.request('update:commit', { uploadId: begun.uploadId });
      return { uploadId: begun.uploadId, updateId: done.updateId, bytesSent, resumedFrom: resumedFrom ?? 0 };
    },
    {
      attempts: args.attempts ?? (args.deadlineMs === undefined ? 6 : Infinity),
      clock,
      ...(args.random ? { random: args.random } : {}),
      ...(args.signal ? { signal: args.signal } : {}),
      isRetryable: (e) =>
        RETRYABLE.has(asCodedError(e)?.code ?? '') &&
        (args.deadlineMs === undefined || clock.now() < args.deadlineMs),
      onRetry: (e, attempt, delayMs) =>
        args.logger.warn(
          { attempt, delayMs, code: asCodedError(e)?.code, err: (e as Error).message },
          'upload interrupted, will resume',
        ),
    },
  );
}
