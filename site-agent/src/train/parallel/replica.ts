import * as tf from '@tensorflow/tfjs-core';
import '../gradients';
import { describeModel, type ModelConfig, type NamedTensors } from '@fedssl/shared/model';
import { createVariables, disposeParams, readWeights, type MomentsReducer } from '@fedssl/shared/model/tf';
import { byolMetadataLoss, targetProjections } from '../objective';

/** A tensor as plain data, the form that crosses thread boundaries. */
export interface PlainTensor4D {
  data: Float32Array;
  shape: [number, number, number, number];
}

/**
 * One optimizer step's inputs (augmentation already done). Every replica of a
 * data-parallel step gets its own rows of the same global batch.
 */
export interface StepBatch {
  /** Both global views stacked on the batch axis, view 1's b rows first, then view 2's same b rows. */
  globals: PlainTensor4D;
  /** Multi-crop local views, b rows each (the same images as the global views). */
  locals: PlainTensor4D[];
  /** Metadata class of each of the b images. */
  labels: Int32Array;
  /** EMA momentum of the target update this step. */
  tau: number;
  /** This replica's share b / B of the global batch (default 1): every loss is scaled by it. */
  lossScale?: number;
}

/** Losses of a step, as means over the global batch. */
export interface StepLosses {
  loss: number;
  byol: number;
  metadata: number;
}

/** What a replica starts from. */
export interface ReplicaInit {
  model: ModelConfig;
  /** Classes of the metadata head; 0 trains BYOL only. */
  metadataClasses: number;
  /** Weight λ of the metadata cross-entropy. */
  lambda: number;
  learningRate: number;
  weightDecay: number;
  /** Shared (online) parameters, target network and metadata head, as the specs name them. */
  online: NamedTensors;
  target: NamedTensors;
  head: NamedTensors;
  /** Adam state from {@link saveOptimizer} to continue from. */
  optimizerState?: NamedTensors;
}

/** A replica's parameters (and optionally Adam's state) read back as plain arrays. */
export interface ReplicaState {
  online: NamedTensors;
  target: NamedTensors;
  head: NamedTensors;
  optimizerState?: NamedTensors;
}

/**
 * What ties a replica to the other data-parallel workers: batch-norm moments inside the
 * model, and the sum of all workers' gradients before the optimizer step.
 */
export interface ReplicaSync {
  reducer: MomentsReducer;
  /** Returns Σ over workers of `grads` (same arrays, summed in a fixed worker order). */
  allReduce(grads: Float32Array[]): Float32Array[];
}

/** The trainer's view of a training engine: one thread ({@link Replica}) or a worker pool. */
export interface TrainEngine {
  step(batch: StepBatch): Promise<StepLosses>;
  read(withOptimizer: boolean): Promise<ReplicaState>;
  close(): Promise<void>;
}

/** Adam's slots as plain arrays: `iter` then first and second moments in trainable order. */
export async function saveOptimizer(optimizer: tf.Optimizer): Promise<NamedTensors> {
  const slots = await optimizer.getWeights();
  const out: NamedTensors = [];
  for (const [i, s] of slots.entries()) {
    out.push({
      name: i === 0 ? 'optimizer.iter' : `optimizer.slot.${i - 1}`,
      shape: s.tensor.shape.slice(),
      data: Float32Array.from(await s.tensor.data()),
    });
  }
  slots[0]?.tensor.dispose(); // the iteration scalar is a fresh tensor; the slots are the optimizer's own
  return out;
}

/**
 * Load state from {@link saveOptimizer}. tfjs's Adam matches slots to variables by
 * position, and the trainable list has a fixed order, so positions carry over.
 */
async function restoreOptimizer(optimizer: tf.Optimizer, state: NamedTensors): Promise<void> {
  const tensors = state.map((s) => ({ name: s.name, tensor: tf.tensor(s.data, s.shape, 'float32') }));
  try {
    await optimizer.setWeights(tensors);
  } finally {
    for (const t of tensors) t.tensor.dispose();
  }
}

/**
 * The model, target network, metadata head and Adam on the current tfjs backend, and the
 * BYOL + metadata training step. The same code runs on one thread (no `sync`) and in each
 * data-parallel worker (with `sync`): there is one step, not a parallel copy of it.
 */
export class Replica implements TrainEngine {
  private readonly online: Map<string, tf.Variable>;
  private readonly target: Map<string, tf.Variable>;
  private readonly head: Map<string, tf.Variable>;
  private readonly optimizer: tf.Optimizer;
  /** Trainable variables in spec order: shared parts, then the metadata head. */
  readonly trainable: tf.Variable[];
  private readonly decayed: tf.Variable[];
  private readonly specs: ReturnType<typeof describeModel>;

  private constructor(
    private readonly init: ReplicaInit,
    private readonly sync?: ReplicaSync,
  ) {
    this.specs = describeModel(init.model, { metadataClasses: init.metadataClasses });
    this.online = createVariables(init.online, this.part('shared'));
    this.target = createVariables(init.target, this.part('target'));
    this.head = createVariables(init.head, this.part('head'));
    this.optimizer = tf.train.adam(init.learningRate);
    const trainable = [...this.part('shared'), ...this.part('head')].filter((s) => s.trainable);
    this.trainable = trainable.map((s) => (this.online.get(s.name) ?? this.head.get(s.name))!);
    // Decoupled weight decay on conv/linear kernels only (not norms or biases).
    this.decayed = init.weightDecay > 0 ? this.trainable.filter((v) => v.shape.length >= 2) : [];
  }

  /** Variables from `init` on the current backend (Adam state restored when given). */
  static async create(init: ReplicaInit, sync?: ReplicaSync): Promise<Replica> {
    const r = new Replica(init, sync);
    try {
      if (init.optimizerState) await restoreOptimizer(r.optimizer, init.optimizerState);
    } catch (e) {
      r.dispose();
      throw e;
    }
    return r;
  }

  private part(which: 'shared' | 'target' | 'head') {
    return this.specs.filter((s) =>
      which === 'shared'
        ? s.shared
        : which === 'target'
          ? s.part === 'encoder' || s.part === 'projector'
          : s.part === 'metadataHead',
    );
  }

  /**
   * Target forward on both global views, online forward + backward, (gradients summed
   * over workers), Adam, running statistics, weight decay, EMA of the target.
   */
  async step(batch: StepBatch): Promise<StepLosses> {
    const { model, metadataClasses, lambda, learningRate, weightDecay } = this.init;
    const reducer = this.sync?.reducer;
    const scale = batch.lossScale ?? 1;
    const scaled = (t: tf.Scalar) => (scale === 1 ? t : (tf.mul(t, scale) as tf.Scalar));
    const [loss, byol, meta] = tf.tidy(() => {
      const globals = tf.tensor4d(batch.globals.data, batch.globals.shape);
      const locals = batch.locals.map((l) => tf.tensor4d(l.data, l.shape));
      // Target projections of both global views (outside the tape: no gradient).
      const targetZ = targetProjections(model, this.target, globals, reducer);
      const stats = new Map<string, tf.Tensor>();
      let byolOut: tf.Scalar | undefined;
      let metaOut: tf.Scalar | undefined;
      const { value, grads } = this.optimizer.computeGradients(() => {
        const l = byolMetadataLoss({
          model,
          online: this.online,
          globals,
          locals,
          targetZ,
          metadata:
            metadataClasses > 0
              ? {
                  head: this.head,
                  labels: tf.tensor1d([...batch.labels, ...batch.labels], 'int32'),
                  classes: metadataClasses,
                  lambda,
                }
              : null,
          statsOut: stats,
          ...(reducer ? { reducer } : {}),
        });
        byolOut = tf.keep(scaled(l.byol));
        if (l.metadata) metaOut = tf.keep(scaled(l.metadata));
        return scaled(l.total);
      }, this.trainable);
      this.optimizer.applyGradients(this.sync ? this.sumOverWorkers(grads) : grads);
      // Running statistics are applied after the step, never inside the tape.
      for (const [name, v] of stats) {
        this.online.get(name)!.assign(v);
        v.dispose();
      }
      for (const v of this.decayed) v.assign(tf.mul(v, 1 - learningRate * weightDecay));
      // EMA of online → target for every target parameter (incl. running stats).
      for (const [name, tv] of this.target)
        tv.assign(tf.add(tf.mul(tv, batch.tau), tf.mul(this.online.get(name)!, 1 - batch.tau)));
      return [value, byolOut!, metaOut ?? tf.scalar(0)];
    });
    try {
      const [l, b, m] = await Promise.all([loss.data(), byol.data(), meta.data()]);
      return { loss: l[0]!, byol: b[0]!, metadata: m[0]! };
    } finally {
      loss.dispose();
      byol.dispose();
      meta.dispose();
    }
  }

  /** The gradients of every worker's rows, summed: the full batch's gradient. */
  private sumOverWorkers(grads: tf.NamedTensorMap): tf.NamedTensorMap {
    // A variable the loss does not reach has no gradient: it contributes zeros.
    const local = this.trainable.map((v) => {
      const g = grads[v.name];
      return g ? (g.dataSync() as Float32Array) : new Float32Array(v.size);
    });
    const summed = this.sync!.allReduce(local);
    const out: tf.NamedTensorMap = {};
    this.trainable.forEach((v, i) => {
      out[v.name] = tf.tensor(summed[i]!, v.shape, 'float32');
    });
    return out;
  }

  async read(withOptimizer: boolean): Promise<ReplicaState> {
    const optimizerState = withOptimizer ? await saveOptimizer(this.optimizer) : undefined;
    return {
      online: readWeights(this.online, this.part('shared')),
      target: readWeights(this.target, this.part('target')),
      head: readWeights(this.head, this.part('head')),
      ...(optimizerState ? { optimizerState } : {}),
    };
  }

  close(): Promise<void> {
    this.dispose();
    return Promise.resolve();
  }

  private dispose(): void {
    disposeParams(this.online);
    disposeParams(this.target);
    disposeParams(this.head);
    this.optimizer.dispose();
  }
}
