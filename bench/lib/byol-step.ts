import * as tf from '@tensorflow/tfjs-core';
import {
  describeModel,
  initWeights,
  mulberry32,
  resnet18ModelConfig,
  tinyModelConfig,
  type ModelConfig,
} from '@fedssl/shared/model';
import { createVariables, disposeParams } from '@fedssl/shared/model/tf';
import { byolMetadataLoss, targetProjections } from '../../site-agent/src/train/objective';

/** The encoders measured: the tiny demo ResNet and a ResNet-18-shaped one at ¼ width. */
export type BenchArch = 'tiny' | 'resnet18';

/** Widths of the ResNet-18-shaped benchmark encoder: torchvision's [64, 64, 128, 256, 512] / 4. */
export const RESNET18_BENCH_WIDTHS = [16, 16, 32, 64, 128];

export const METADATA_CLASSES = 4;

/** The model config of a benchmark encoder at `size` px (the same one bench/reference/byol_step.py builds). */
export function benchModelConfig(arch: BenchArch, size: number): ModelConfig {
  return arch === 'tiny' ? tinyModelConfig(size) : resnet18ModelConfig(size, RESNET18_BENCH_WIDTHS);
}

/** One BYOL + metadata training step on fixed views; `step()` returns the loss. */
export interface ByolBench {
  config: ModelConfig;
  paramCount: number;
  step(): number;
  dispose(): void;
}

/**
 * The trainer's step (site-agent/src/train/trainer.ts) without augmentation: target
 * forward on both global views, online forward + backward on both, symmetric BYOL loss
 * + λ·cross-entropy of the metadata head, Adam, running-stat update and EMA of the
 * target. Views are fixed random images so both frameworks do the same work.
 */
export function createByolBench(arch: BenchArch, size: number, batch: number, seed = 1): ByolBench {
  const config = benchModelConfig(arch, size);
  const specs = describeModel(config, { metadataClasses: METADATA_CLASSES });
  const sharedSpecs = specs.filter((s) => s.shared);
  const targetSpecs = specs.filter((s) => s.part === 'encoder' || s.part === 'projector');
  const headSpecs = specs.filter((s) => s.part === 'metadataHead');
  const init = initWeights(specs, seed);
  const byName = new Map(init.map((t) => [t.name, t]));
  const pick = (ss: typeof specs) => ss.map((s) => byName.get(s.name)!);
  const online = createVariables(pick(sharedSpecs), sharedSpecs);
  const target = createVariables(pick(targetSpecs), targetSpecs);
  const head = createVariables(pick(headSpecs), headSpecs);
  const trainable = [...sharedSpecs, ...headSpecs]
    .filter((s) => s.trainable)
    .map((s) => (online.get(s.name) ?? head.get(s.name))!);
  const optimizer = tf.train.adam(1e-3);
  const rand = mulberry32(seed);
  const views = tf.tensor4d(
    Float32Array.from({ length: 2 * batch * size * size }, () => rand()),
    [2 * batch, size, size, 1],
  );
  const labels = tf.tensor1d(
    Int32Array.from({ length: 2 * batch }, (_, i) => i % METADATA_CLASSES),
    'int32',
  );
  const tau = 0.99;
  const lambda = 0.5;
  let paramCount = 0;
  for (const s of sharedSpecs) paramCount += s.shape.reduce((a, b) => a * b, 1);

  return {
    config,
    paramCount,
    step() {
      const loss = tf.tidy(() => {
        const targetZ = targetProjections(config, target, views);
        const stats = new Map<string, tf.Tensor>();
        const cost = optimizer.minimize(
          () =>
            byolMetadataLoss({
              model: config,
              online,
              globals: views,
              locals: [],
              targetZ,
              metadata: { head, labels, classes: METADATA_CLASSES, lambda },
              statsOut: stats,
            }).total,
          true,
          trainable,
        );
        for (const [name, value] of stats) {
          online.get(name)!.assign(value);
          value.dispose();
        }
        for (const [name, tv] of target)
          tv.assign(tf.add(tf.mul(tv, tau), tf.mul(online.get(name)!, 1 - tau)));
        return cost!;
      });
      const v = loss.dataSync()[0]!;
      loss.dispose();
      return v;
    },
    dispose() {
      disposeParams(online);
      disposeParams(target);
      disposeParams(head);
      optimizer.dispose();
      views.dispose();
      labels.dispose();
    },
  };
}
