import { createHash } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { SealedUpdate } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { updateHeaderSchema } from '@fedssl/shared/protocol';
import { ensureSecureDir, writeSecureFile } from '../config/secure-files';
import { decodeLocalState, encodeLocalState, type LocalState } from '../train/local-state';

/**
 * The agent's outbox: a sealed update is written here, durably, before its first byte is
 * sent, and removed once the coordinator has answered it for good. An agent killed
 * mid-upload finds it again when the coordinator re-offers the task and resumes from the
 * chunk the coordinator asks for — same header, same signature, same ciphertext — instead
 * of training again and sealing a different envelope.
 */

/** What the ledger needs about an update (hashes and sizes, never the tensors). */
export interface UploadFacts {
  plaintextSha256: string;
  ciphertextSha512: string;
  tensors: string[];
  exampleCount: number;
  /** Ciphertext bytes plus the signed header. */
  bytes: number;
}

export interface OutboxEntry {
  taskId: string;
  runId: string;
  round: number;
  modelVersion: string;
  /** The task's deadline (ISO): past it the entry can never be answered and is pruned. */
  deadline: string;
  sealed: SealedUpdate;
  facts: UploadFacts;
  /**
   * The local state the training of this update produced. Kept with the update so that a
   * crash between sealing and saving local state cannot leave the next round starting from
   * the previous round's target network: resuming writes it again.
   */
  localState?: LocalState;
}

export interface Outbox {
  /** Stores the entry atomically (temp file, fsync, rename); replaces one for the same task. */
  put(entry: OutboxEntry): Promise<void>;
  /** The entry for `taskId`, or undefined (none, or unreadable: it is then removed). */
  get(taskId: string): Promise<OutboxEntry | undefined>;
  remove(taskId: string): Promise<void>;
  /** Removes entries whose deadline is before `nowMs`; returns their task ids. */
  prune(nowMs: number): Promise<string[]>;
}

const MAGIC = Buffer.from('FEDSSL-OUTBOX-1\n', 'latin1');
const metaSchema = z
  .object({
    taskId: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/),
    runId: z.string(),
    round: z.number().int(),
    modelVersion: z.string(),
    deadline: z.string(),
    header: updateHeaderSchema,
    signature: z.string(),
    facts: z
      .object({
        plaintextSha256: z.string(),
        ciphertextSha512: z.string(),
        tensors: z.array(z.string()),
        exampleCount: z.number().int(),
        bytes: z.number().int(),
      })
      .strict(),
    chunkLengths: z.array(z.number().int().min(0)),
    localStateBytes: z.number().int().min(0),
  })
  .strict();

/**
 * Layout: MAGIC ‖ u32be(metaLength) ‖ meta JSON ‖ chunks ‖ local state ‖ SHA-256 of all
 * before it. The trailing hash catches a file damaged after it was written (the rename
 * already rules out a torn write).
 */
export function encodeOutboxEntry(e: OutboxEntry): Uint8Array {
  const localState = e.localState ? encodeLocalState(e.localState) : new Uint8Array(0);
  const meta = Buffer.from(
    JSON.stringify({
      taskId: e.taskId,
      runId: e.runId,
      round: e.round,
      modelVersion: e.modelVersion,
      deadline: e.deadline,
      header: e.sealed.header,
      signature: e.sealed.signature,
      facts: e.facts,
      chunkLengths: e.sealed.chunks.map((c) => c.byteLength),
      localStateBytes: localState.byteLength,
    }),
  );
  const len = Buffer.alloc(4);
  len.writeUInt32BE(meta.length);
  const body = Buffer.concat([MAGIC, len, meta, ...e.sealed.chunks, localState]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** @throws FedsslError UPLOAD_FAILED when the bytes are not a complete, intact entry. */
export function decodeOutboxEntry(bytes: Uint8Array): OutboxEntry {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = (why: string) => new FedsslError('UPLOAD_FAILED', `outbox entry unreadable: ${why}`);
  if (b.length < MAGIC.length + 4 + 32 || !b.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('bad magic');
  const body = b.subarray(0, b.length - 32);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(b.subarray(b.length - 32))
  )
    throw bad('hash mismatch');
  const metaLen = body.readUInt32BE(MAGIC.length);
  let at = MAGIC.length + 4;
  if (at + metaLen > body.length) throw bad('truncated');
  const parsed = metaSchema.safeParse(JSON.parse(body.subarray(at, at + metaLen).toString('utf8')));
  if (!parsed.success) throw bad('metadata does not match the schema');
  const m = parsed.data;
  at += metaLen;
  const chunks: Uint8Array[] = [];
  for (const n of m.chunkLengths) {
    chunks.push(new Uint8Array(body.subarray(at, at + n)));
    at += n;
  }
  if (chunks.length !== m.header.chunkCount || at + m.localStateBytes !== body.length)
    throw bad('lengths do not add up');
  return {
    taskId: m.taskId,
    runId: m.runId,
    round: m.round,
    modelVersion: m.modelVersion,
    deadline: m.deadline,
    sealed: { header: m.header, signature: m.signature, chunks },
    facts: m.facts,
    ...(m.localStateBytes > 0
      ? { localState: decodeLocalState(new Uint8Array(body.subarray(at, at + m.localStateBytes))) }
      : {}),
  };
}

/** The outbox as files `<dir>/<taskId>.outbox` (0600, written atomically). */
export function fileOutbox(dir: string, logger: Logger): Outbox {
  // taskId matches the protocol's id pattern (checked again here), so it cannot escape dir.
  const file = (taskId: string) => {
    if (!/^[A-Za-z0-9._:-]{1,128}$/.test(taskId) || taskId.startsWith('.'))
      throw new FedsslError('UPLOAD_FAILED', `task id ${JSON.stringify(taskId)} cannot name an outbox file`);
    return join(dir, `${taskId}.outbox`);
  };
  const remove = async (taskId: string) => rm(file(taskId), { force: true });
  const read = async (taskId: string): Promise<OutboxEntry | undefined> => {
    let bytes: Buffer;
    try {
      bytes = await readFile(file(taskId));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return decodeOutboxEntry(new Uint8Array(bytes));
    } catch (e) {
      // Training again costs time; uploading a damaged envelope would get it rejected.
      logger.warn({ taskId, err: (e as Error).message }, 'outbox entry unreadable, removed');
      await remove(taskId);
      return undefined;
    }
  };
  return {
    async put(entry) {
      await ensureSecureDir(dir);
      await writeSecureFile(file(entry.taskId), encodeOutboxEntry(entry));
    },
    get: read,
    remove,
    async prune(nowMs) {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw e;
      }
      const pruned: string[] = [];
      for (const name of names) {
        if (!name.endsWith('.outbox')) continue;
        const taskId = name.slice(0, -'.outbox'.length);
        const entry = await read(taskId);
        if (entry && Date.parse(entry.deadline) < nowMs) {
          await remove(taskId);
          pruned.push(taskId);
        }
      }
      return pruned;
    },
  };
}
