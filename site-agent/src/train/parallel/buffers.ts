/* The pool's shared memory, free of TensorFlow.js so the coordinating thread never loads it. */

/**
 * Shared memory of one worker pool: a barrier, per-worker slots for batch-norm moments
 * and for gradients. Each kind of slot has two banks used alternately, so a fast worker
 * writing call k + 1 never overwrites what a slow one still reads of call k (between the
 * two lies call k + 1's barrier, which every worker reaches only after reading call k):
 * one barrier per exchange instead of two.
 */
export interface SyncBuffers {
  workers: number;
  /** Int32: generation, arrived count, aborted flag. */
  control: SharedArrayBuffer;
  /** Float64: 2 banks × workers × (1 + 2 · maxChannels). */
  moments: SharedArrayBuffer;
  /** Float32: 2 banks × workers × gradLength. */
  grads: SharedArrayBuffer;
  maxChannels: number;
  gradLength: number;
}

/** Indices in the control array. */
export const GEN = 0;
export const ARRIVED = 1;
export const ABORTED = 2;

export function createSyncBuffers(workers: number, maxChannels: number, gradLength: number): SyncBuffers {
  return {
    workers,
    control: new SharedArrayBuffer(3 * 4),
    moments: new SharedArrayBuffer(2 * workers * (1 + 2 * maxChannels) * 8),
    grads: new SharedArrayBuffer(2 * workers * gradLength * 4),
    maxChannels,
    gradLength,
  };
}

/** Thrown in a worker whose barrier was released because another worker failed. */
export class SyncAbortedError extends Error {
  constructor() {
    super('another training worker failed');
    this.name = 'SyncAbortedError';
  }
}

/** Release every worker waiting at (or later reaching) a barrier of this pool; they throw {@link SyncAbortedError}. */
export function abortSync(buffers: SyncBuffers): void {
  const control = new Int32Array(buffers.control);
  Atomics.store(control, ABORTED, 1);
  Atomics.notify(control, GEN);
}
