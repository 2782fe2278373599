import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describeModel, shapeSize } from '@fedssl/shared/model';
import { ERROR_CODES, FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import type { FromWorker, ToWorker, WorkerData } from './messages';
import type { PlainTensor4D, ReplicaInit, ReplicaState, StepBatch, StepLosses, TrainEngine } from './replica';
import { abortSync, createSyncBuffers, type SyncBuffers } from './buffers';

/**
 * Worker threads the trainer uses when not told: one. Measured on a 2-core machine under
 * a load average of 17–21 (docs/benchmarks.md, issue 8), two workers ran at 0.68–1.11×
 * the speed of one, and every round pays the workers' start-up. On a host with idle cores,
 * pass `workers: 2`: the result is the same up to float rounding.
 */
export function defaultTrainingWorkers(): number {
  return 1;
}

/**
 * Worker threads a site agent trains with on the wasm/cpu backends when its config has no
 * `trainWorkers`: the host's cores, at most two. On an idle 2-core machine two workers trained
 * 1.66–1.78× as fast as one for 1.05–1.08× the CPU (docs/benchmarks.md, issue 8); more than two
 * was not measured (each worker holds its own backend and a share of the batch). A host that
 * runs other work sets `trainWorkers: 1`.
 */
export function agentTrainingWorkers(cores = availableParallelism()): number {
  return Math.max(1, Math.min(2, cores));
}

/** The compiled worker entry: beside this file in dist, or site-agent/dist when running from sources. */
function workerScript(): string {
  const beside = path.join(__dirname, 'worker.js');
  if (existsSync(beside)) return beside;
  const dist = path.resolve(__dirname, '..', '..', '..', 'dist', 'train', 'parallel', 'worker.js');
  if (existsSync(dist)) return dist;
  throw new FedsslError(
    'TRAINING_FAILED',
    `training worker script not found at ${dist}: build site-agent first (npx tsc -b site-agent)`,
  );
}

interface Failure {
  message: string;
  code?: string;
  aborted: boolean;
}

/** One worker thread with at most one request in flight. */
class WorkerHandle {
  private pending: { resolve: (v: unknown) => void; reject: (f: Failure) => void } | undefined;
  readonly ready: Promise<unknown>;
  readonly exited: Promise<number>;

  constructor(
    readonly rank: number,
    private readonly worker: Worker,
    onFailure: () => void,
  ) {
    this.ready = this.expect();
    worker.on('message', (m: FromWorker) => {
      const p = this.pending;
      this.pending = undefined;
      if (m.type === 'error') {
        onFailure();
        p?.reject({ message: m.message, aborted: m.aborted, ...(m.code ? { code: m.code } : {}) });
      } else {
        p?.resolve(m.type === 'ready' ? null : m.result);
      }
    });
    worker.on('error', (e) => {
      onFailure();
      this.settleFailed({ message: e.message, aborted: false });
    });
    this.exited = new Promise((resolve) => {
      worker.on('exit', (code) => {
        this.settleFailed({ message: `worker thread exited with code ${code}`, aborted: false });
        resolve(code);
      });
    });
  }

  private settleFailed(f: Failure): void {
    const p = this.pending;
    this.pending = undefined;
    p?.reject(f);
  }

  private expect(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
    });
  }

  request(msg: ToWorker, transfer: ArrayBuffer[] = []): Promise<unknown> {
    const p = this.expect();
    this.worker.postMessage(msg, transfer);
    return p;
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

/** Options of {@link ParallelTrainer.start}. */
export interface ParallelTrainerOptions {
  workers: number;
  /** The tfjs backend of every worker. */
  backend: WorkerData['backend'];
  init: ReplicaInit;
}

/** Rows [start, end) of image batch `b` that worker `k` of `w` trains on: as even as possible, in order. */
export function workerRows(b: number, w: number, k: number): [number, number] {
  return [Math.floor((k * b) / w), Math.floor(((k + 1) * b) / w)];
}

function rows(t: PlainTensor4D, start: number, end: number): PlainTensor4D {
  const per = t.shape[1] * t.shape[2] * t.shape[3];
  return {
    data: t.data.slice(start * per, end * per),
    shape: [end - start, t.shape[1], t.shape[2], t.shape[3]],
  };
}

/**
 * Data-parallel training over worker threads: each worker has its own tfjs backend and
 * replica of the variables and trains on its share of every batch; batch-norm moments are
 * combined inside every norm and gradients summed before the (identical) Adam step on
 * every replica, so the result equals one worker's training up to float rounding.
 *
 * @example
 * const pool = await ParallelTrainer.start({ workers: 2, backend: 'wasm', init });
 * try { await pool.step(batch); const state = await pool.read(false); } finally { await pool.close(); }
 */
export class ParallelTrainer implements TrainEngine {
  private failed = false;
  private closed = false;

  private constructor(
    private readonly handles: WorkerHandle[],
    private readonly buffers: SyncBuffers,
  ) {}

  /**
   * Start the workers and wait until each has its backend and replica.
   * @throws FedsslError from the first failing worker (its code if it threw a
   *   FedsslError, TRAINING_FAILED otherwise) with the worker's message.
   */
  static async start(opts: ParallelTrainerOptions): Promise<ParallelTrainer> {
    const { workers, init } = opts;
    if (!Number.isInteger(workers) || workers < 1) {
      throw new FedsslError('TRAINING_FAILED', `worker count must be a positive integer, got ${workers}`);
    }
    const specs = describeModel(init.model, { metadataClasses: init.metadataClasses });
    const maxChannels = Math.max(...specs.filter((s) => s.shape.length === 1).map((s) => s.shape[0]!));
    const gradLength = specs
      .filter((s) => s.trainable && (s.shared || s.part === 'metadataHead'))
      .reduce((n, s) => n + shapeSize(s.shape), 0);
    const buffers = createSyncBuffers(workers, maxChannels, gradLength);
    const script = workerScript();
    const handles: WorkerHandle[] = [];
    const pool = new ParallelTrainer(handles, buffers);
    for (let rank = 0; rank < workers; rank++) {
      const data: WorkerData = { rank, backend: opts.backend, buffers, init };
      handles.push(
        new WorkerHandle(rank, new Worker(script, { workerData: data }), () => abortSync(buffers)),
      );
    }
    await pool.all(handles.map((h) => h.ready));
    return pool;
  }

  get workers(): number {
    return this.handles.length;
  }

  /** Split the batch by images (view pairs stay on one worker), run the step on all, sum the losses. */
  async step(batch: StepBatch): Promise<StepLosses> {
    this.usable();
    const b = batch.labels.length;
    const w = this.handles.length;
    if (b < w)
      throw new FedsslError('TRAINING_FAILED', `batch of ${b} images cannot be split over ${w} workers`);
    if (batch.globals.shape[0] !== 2 * b) {
      throw new FedsslError(
        'TRAINING_FAILED',
        `global views have ${batch.globals.shape[0]} rows, expected ${2 * b}`,
      );
    }
    const view1 = rows(batch.globals, 0, b);
    const view2 = rows(batch.globals, b, 2 * b);
    const results = (await this.all(
      this.handles.map((h) => {
        const [s, e] = workerRows(b, w, h.rank);
        const v1 = rows(view1, s, e);
        const v2 = rows(view2, s, e);
        const globals = new Float32Array(v1.data.length * 2);
        globals.set(v1.data);
        globals.set(v2.data, v1.data.length);
        const part: StepBatch = {
          globals: { data: globals, shape: [2 * (e - s), v1.shape[1], v1.shape[2], v1.shape[3]] },
          locals: batch.locals.map((l) => rows(l, s, e)),
          labels: batch.labels.slice(s, e),
          tau: batch.tau,
          lossScale: ((e - s) / b) * (batch.lossScale ?? 1),
        };
        const transfer = [
          part.globals.data.buffer,
          ...part.locals.map((l) => l.data.buffer),
        ] as ArrayBuffer[];
        return h.request({ type: 'step', batch: part }, transfer);
      }),
    )) as StepLosses[];
    // Summed in worker order: the same global loss every time.
    return results.reduce((acc, r) => ({
      loss: acc.loss + r.loss,
      byol: acc.byol + r.byol,
      metadata: acc.metadata + r.metadata,
    }));
  }

  /** Parameters (and Adam's state) of worker 0; every replica holds the same values. */
  async read(withOptimizer: boolean): Promise<ReplicaState> {
    this.usable();
    return (await this.all([this.handles[0]!.request({ type: 'read', withOptimizer })]))[0] as ReplicaState;
  }

  /** Dispose every replica and wait for each thread to exit (terminating it if it failed). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.failed) {
      try {
        await this.all(this.handles.map((h) => h.request({ type: 'close' })));
      } catch {
        // Fall through to terminate.
      }
    }
    // A thread that has not exited shortly after its replica is gone is stopped.
    await Promise.all(
      this.handles.map(async (h) => {
        if (this.failed) return h.terminate();
        const timer = setTimeout(() => void h.terminate(), 5_000);
        await h.exited;
        clearTimeout(timer);
      }),
    );
  }

  private usable(): void {
    if (this.closed || this.failed) {
      throw new FedsslError(
        'TRAINING_FAILED',
        `the training worker pool is ${this.closed ? 'closed' : 'failed'}`,
      );
    }
  }

  /**
   * Wait for one answer per request. When any worker fails, the pool is unusable: the
   * others are terminated and the error of the worker that caused it is thrown.
   */
  private async all(requests: Promise<unknown>[]): Promise<unknown[]> {
    const settled = await Promise.allSettled(requests);
    const failures = settled
      .map((s, rank) => (s.status === 'rejected' ? { rank, f: s.reason as Failure } : undefined))
      .filter((x) => x !== undefined);
    if (failures.length === 0) return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value);
    this.failed = true;
    abortSync(this.buffers);
    await Promise.all(this.handles.map((h) => h.terminate()));
    const cause = failures.find((x) => !x.f.aborted) ?? failures[0]!;
    const code =
      cause.f.code && cause.f.code in ERROR_CODES ? (cause.f.code as ErrorCode) : 'TRAINING_FAILED';
    throw new FedsslError(code, `training worker ${cause.rank}: ${cause.f.message}`, { worker: cause.rank });
  }
}
