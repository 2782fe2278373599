import {
  describeModel,
  initWeights,
  modelConfigSchema,
  mulberry32,
  resnet18ModelConfig,
  tinyModelConfig,
  type ModelConfig,
} from '@fedssl/shared/model';
import { ParallelTrainer } from '../../site-agent/src/train/parallel/pool';
import type { ReplicaInit, TrainEngine } from '../../site-agent/src/train/parallel/replica';

/** The encoders measured: the tiny demo ResNet, and ResNet-18- and ResNet-50-shaped ones at ¼ width. */
export type BenchArch = 'tiny' | 'resnet18' | 'resnet50';
export const BENCH_ARCHS: readonly BenchArch[] = ['tiny', 'resnet18', 'resnet50'];

/**
 * Widths of the ResNet-18- and ResNet-50-shaped benchmark encoders: torchvision's
 * [64, 64, 128, 256, 512] / 4 (ResNet-50's bottlenecks expand ×4, so its features are 512-d).
 */
export const RESNET18_BENCH_WIDTHS = [16, 16, 32, 64, 128];

export const METADATA_CLASSES = 4;

/**
 * The model config of a benchmark encoder at `size` px (the same one bench/reference/byol_step.py
 * builds). Batch norm unless `norm` says otherwise, whatever the product default, so that the
 * recorded figures keep their meaning.
 */
export function benchModelConfig(
  arch: BenchArch,
  size: number,
  norm: ModelConfig['norm'] = 'batch',
): ModelConfig {
  if (arch === 'tiny') return { ...tinyModelConfig(size), norm };
  if (arch === 'resnet18') return { ...resnet18ModelConfig(size, RESNET18_BENCH_WIDTHS), norm };
  // The heads of the ResNet-18 bench encoder, so the two differ only in the encoder.
  return modelConfigSchema.parse({
    arch: 'resnet50',
    inputSize: size,
    norm,
    widths: RESNET18_BENCH_WIDTHS,
    projectorHidden: 1024,
    projectionDim: 256,
    metadataHidden: 256,
  });
}

/** One BYOL + metadata training step on fixed views; `step()` returns the loss. */
export interface ByolBench {
  config: ModelConfig;
  paramCount: number;
  /** Data-parallel worker threads (1: this thread). */
  workers: number;
  step(): Promise<number>;
  dispose(): Promise<void>;
}

/**
 * The trainer's step (site-agent/src/train/parallel/replica.ts, the code trainRound
 * runs) without augmentation: target forward on both global views, online forward +
 * backward on both, symmetric BYOL loss + λ·cross-entropy of the metadata head, Adam,
 * running-stat update and EMA of the target. Views are fixed random images so both
 * frameworks do the same work. With `workers` > 1 the step runs data-parallel on worker
 * threads of `backend` (build site-agent first: the workers run its dist).
 */
export async function createByolBench(
  arch: BenchArch,
  size: number,
  batch: number,
  opts: { seed?: number; workers?: number; backend?: 'wasm' | 'cpu'; norm?: ModelConfig['norm'] } = {},
): Promise<ByolBench> {
  const seed = opts.seed ?? 1;
  const workers = opts.workers ?? 1;
  const config = benchModelConfig(arch, size, opts.norm);
  const specs = describeModel(config, { metadataClasses: METADATA_CLASSES });
  const init = initWeights(specs, seed);
  const byName = new Map(init.map((t) => [t.name, t]));
  const pick = (keep: (s: (typeof specs)[number]) => boolean) =>
    specs.filter(keep).map((s) => byName.get(s.name)!);
  const replicaInit: ReplicaInit = {
    model: config,
    metadataClasses: METADATA_CLASSES,
    lambda: 0.5,
    learningRate: 1e-3,
    weightDecay: 0,
    online: pick((s) => s.shared),
    target: pick((s) => s.part === 'encoder' || s.part === 'projector'),
    head: pick((s) => s.part === 'metadataHead'),
  };
  // Loaded only for one worker: with a pool, this thread holds no TensorFlow.js at all.
  const engine: TrainEngine =
    workers > 1
      ? await ParallelTrainer.start({ workers, backend: opts.backend ?? 'wasm', init: replicaInit })
      : await (await import('../../site-agent/src/train/parallel/replica')).Replica.create(replicaInit);
  const rand = mulberry32(seed);
  const globals = Float32Array.from({ length: 2 * batch * size * size }, () => rand());
  const labels = Int32Array.from({ length: batch }, (_, i) => i % METADATA_CLASSES);
  let paramCount = 0;
  for (const s of specs) if (s.shared) paramCount += s.shape.reduce((a, b) => a * b, 1);

  return {
    config,
    paramCount,
    workers,
    async step() {
      // Copies: the pool hands the arrays it sends over to the workers.
      const r = await engine.step({
        globals: { data: globals.slice(), shape: [2 * batch, size, size, 1] },
        locals: [],
        labels: labels.slice(),
        tau: 0.99,
      });
      return r.loss;
    },
    dispose: () => engine.close(),
  };
}
