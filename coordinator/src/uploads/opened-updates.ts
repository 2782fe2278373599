import type { NamedTensors } from '@fedssl/shared/codec';
import { PlaintextPool } from './plaintext-pool';

/** Default memory for opened updates between commit and aggregation (FEDSSL_INGEST_CACHE_MB). */
export const DEFAULT_OPENED_UPDATES_MIB = 1024;

/**
 * What commit made of an accepted update: its validated delta, or for a secure-aggregation
 * run the opened (masked) plaintext, which only the unmasking step can use.
 */
export type OpenedUpdate = { kind: 'delta'; tensors: NamedTensors } | { kind: 'masked'; plain: Uint8Array };

interface Entry {
  runId: string;
  round: number;
  bytes: number;
  value: OpenedUpdate;
}

/** Bytes held by an opened update: its distinct buffers (decoded tensors may share one). */
function bytesOf(value: OpenedUpdate): number {
  if (value.kind === 'masked') return value.plain.buffer.byteLength;
  const buffers = new Set<ArrayBufferLike>(value.tensors.map((t) => t.data.buffer));
  let n = 0;
  for (const b of buffers) n += b.byteLength;
  return n;
}

/**
 * Accepted updates as commit opened them, kept in memory by update id until their round is
 * aggregated, so that the normal path decrypts and decodes each update once. It is only a
 * cache: the sealed file stays the durable record, and whatever is missing here (a
 * coordinator restart, an update over the budget, an aggregation retried after a failure)
 * is opened again from that file, giving the same values. Nothing is folded ahead of
 * aggregation, so the strategies still see every update in siteId order and the result does
 * not depend on arrival order.
 *
 * Memory is bounded by `budgetBytes`, which also covers the idle plaintext buffers kept for
 * reuse ({@link buffers}): idle buffers go first, then the oldest entries are evicted to make
 * room, and an update larger than the whole budget is not kept. An entry leaves when
 * aggregation takes it, when its round is published or its run ends ({@link dropRun}).
 */
export class OpenedUpdates {
  /** Insertion order = age (the oldest is evicted first). */
  private readonly entries = new Map<string, Entry>();
  private held = 0;
  /** Plaintext buffers to open updates into; idle ones count against the same budget. */
  readonly buffers: PlaintextPool;

  constructor(readonly budgetBytes: number) {
    this.buffers = new PlaintextPool((n) => this.held + this.buffers.idleBytes + n <= this.budgetBytes);
  }

  /** Bytes held now by opened updates (idle buffers not counted: {@link PlaintextPool.idleBytes}). */
  get bytes(): number {
    return this.held;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Keeps the opened form of accepted update `updateId`; false when it does not fit the budget. */
  put(updateId: string, runId: string, round: number, value: OpenedUpdate): boolean {
    this.take(updateId);
    const bytes = bytesOf(value);
    if (bytes > this.budgetBytes) return false;
    this.buffers.trim(this.budgetBytes - this.held - bytes);
    for (const [id, e] of this.entries) {
      if (this.held + bytes <= this.budgetBytes) break;
      this.entries.delete(id);
      this.held -= e.bytes;
    }
    this.entries.set(updateId, { runId, round, bytes, value });
    this.held += bytes;
    return true;
  }

  /** Removes and returns the opened form of `updateId`, if it is held. */
  take(updateId: string): OpenedUpdate | undefined {
    const e = this.entries.get(updateId);
    if (!e) return undefined;
    this.entries.delete(updateId);
    this.held -= e.bytes;
    return e.value;
  }

  /** Forgets the updates of a run (of one of its rounds, every attempt, when given). */
  dropRun(runId: string, round?: number): void {
    for (const [id, e] of this.entries) {
      if (e.runId === runId && (round === undefined || e.round === round)) {
        this.entries.delete(id);
        this.held -= e.bytes;
      }
    }
  }
}
