import * as tf from '@tensorflow/tfjs-core';
import type { MomentsReducer } from '@fedssl/shared/model/tf';
import { abortSync, ABORTED, ARRIVED, GEN, SyncAbortedError, type SyncBuffers } from './buffers';
import type { ReplicaSync } from './replica';

/**
 * One worker's end of the pool's shared memory: a {@link MomentsReducer} for the model's
 * batch norms and the gradient all-reduce. Every worker sums the slots in worker order
 * 0, 1, …, so all of them get bit-identical results and the run is deterministic.
 * Blocking (Atomics.wait): use in worker threads only.
 */
export class WorkerSync implements MomentsReducer, ReplicaSync {
  private readonly control: Int32Array;
  private readonly moment: Float64Array;
  private readonly grad: Float32Array;
  private readonly momentSlot: number;
  private momentCalls = 0;
  private gradCalls = 0;
  readonly reducer: MomentsReducer = this;

  constructor(
    private readonly buffers: SyncBuffers,
    private readonly rank: number,
  ) {
    this.control = new Int32Array(buffers.control);
    this.moment = new Float64Array(buffers.moments);
    this.grad = new Float32Array(buffers.grads);
    this.momentSlot = 1 + 2 * buffers.maxChannels;
  }

  /** Wait until every worker has arrived (sense by generation count). */
  barrier(): void {
    const c = this.control;
    const gen = Atomics.load(c, GEN);
    if (Atomics.load(c, ABORTED)) throw new SyncAbortedError();
    if (Atomics.add(c, ARRIVED, 1) === this.buffers.workers - 1) {
      Atomics.store(c, ARRIVED, 0);
      Atomics.add(c, GEN, 1);
      Atomics.notify(c, GEN);
      return;
    }
    while (Atomics.load(c, GEN) === gen) {
      if (Atomics.load(c, ABORTED)) throw new SyncAbortedError();
      // The timeout only bounds how late an abort is noticed if a notify were missed.
      Atomics.wait(c, GEN, gen, 500);
    }
  }

  abort(): void {
    abortSync(this.buffers);
  }

  /** Offset of `worker`'s slot in the bank of this call (alternating banks). */
  private momentOffset(bank: number, worker: number): number {
    return (bank * this.buffers.workers + worker) * this.momentSlot;
  }

  private exchangeMoments(count: number, a: tf.Tensor, b: tf.Tensor): number {
    const c = a.size;
    if (c > this.buffers.maxChannels) {
      throw new Error(`batch norm over ${c} channels, the pool was sized for ${this.buffers.maxChannels}`);
    }
    const bank = this.momentCalls++ & 1;
    const off = this.momentOffset(bank, this.rank);
    this.moment[off] = count;
    this.moment.set(a.dataSync() as Float32Array, off + 1);
    this.moment.set(b.dataSync() as Float32Array, off + 1 + c);
    this.barrier();
    return bank;
  }

  moments(
    count: number,
    mean: tf.Tensor,
    m2: tf.Tensor,
  ): { count: number; mean: tf.Tensor; variance: tf.Tensor } {
    const c = mean.size;
    const bank = this.exchangeMoments(count, mean, m2);
    const w = this.buffers.workers;
    let total = 0;
    for (let k = 0; k < w; k++) total += this.moment[this.momentOffset(bank, k)]!;
    const mu = new Float64Array(c);
    for (let k = 0; k < w; k++) {
      const off = this.momentOffset(bank, k);
      const nk = this.moment[off]!;
      for (let j = 0; j < c; j++) mu[j]! += (nk * this.moment[off + 1 + j]!) / total;
    }
    // Chan et al.: M2 = Σ_k M2_k + n_k (mean_k − mean)².
    const variance = new Float32Array(c);
    const m2sum = new Float64Array(c);
    for (let k = 0; k < w; k++) {
      const off = this.momentOffset(bank, k);
      const nk = this.moment[off]!;
      for (let j = 0; j < c; j++) {
        const d = this.moment[off + 1 + j]! - mu[j]!;
        m2sum[j]! += this.moment[off + 1 + c + j]! + nk * d * d;
      }
    }
    for (let j = 0; j < c; j++) variance[j] = m2sum[j]! / total;
    return {
      count: total,
      mean: tf.tensor(Float32Array.from(mu), mean.shape, 'float32'),
      variance: tf.tensor(variance, mean.shape, 'float32'),
    };
  }

  sums(dBeta: tf.Tensor, dGamma: tf.Tensor): [tf.Tensor, tf.Tensor] {
    const c = dBeta.size;
    const bank = this.exchangeMoments(0, dBeta, dGamma);
    const a = new Float64Array(c);
    const b = new Float64Array(c);
    for (let k = 0; k < this.buffers.workers; k++) {
      const off = this.momentOffset(bank, k);
      for (let j = 0; j < c; j++) {
        a[j]! += this.moment[off + 1 + j]!;
        b[j]! += this.moment[off + 1 + c + j]!;
      }
    }
    return [
      tf.tensor(Float32Array.from(a), dBeta.shape, 'float32'),
      tf.tensor(Float32Array.from(b), dGamma.shape, 'float32'),
    ];
  }

  allReduce(grads: Float32Array[]): Float32Array[] {
    const { workers, gradLength } = this.buffers;
    const bank = this.gradCalls++ & 1;
    const slot = (k: number) => (bank * workers + k) * gradLength;
    const total = grads.reduce((n, g) => n + g.length, 0);
    if (total > gradLength) {
      throw new Error(`gradients of ${total} values, the pool was sized for ${gradLength}`);
    }
    let off = slot(this.rank);
    for (const g of grads) {
      this.grad.set(g, off);
      off += g.length;
    }
    this.barrier();
    const out: Float32Array[] = [];
    let pos = 0;
    for (const g of grads) {
      const sum = new Float32Array(g.length);
      for (let k = 0; k < workers; k++) {
        const base = slot(k) + pos;
        for (let j = 0; j < sum.length; j++) sum[j]! += this.grad[base + j]!;
      }
      out.push(sum);
      pos += g.length;
    }
    return out;
  }
}
