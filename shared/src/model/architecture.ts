import { FedsslError } from '../errors';
import type { ModelConfig } from './config';

/**
 * The encoder's layout as plain data. `describeModel` derives parameter names and
 * shapes from it and the TensorFlow forward pass walks it, so the two can never disagree.
 */
export interface EncoderPlan {
  /** Stem convolution `encoder.conv1` + norm `encoder.bn1`. */
  stem: {
    kernel: number;
    stride: number;
    outChannels: number;
    /** 3×3 stride-2 max-pool after the stem. */ pool: boolean;
  };
  blocks: BlockPlan[];
  /** Width of the globally average-pooled feature vector. */
  featureDim: number;
  norm: ModelConfig['norm'];
}

/** One residual block (`encoder.layer{stage}.{index}`). */
export interface BlockPlan {
  prefix: string;
  kind: 'basic' | 'bottleneck';
  /** Stride of the block's spatial convolution (conv1 for basic, conv2 for bottleneck, as torchvision v1.5). */
  stride: number;
  inChannels: number;
  /** Width of the inner convolutions. */
  midChannels: number;
  outChannels: number;
  /** A 1×1 projection shortcut (`downsample.0` conv + `downsample.1` norm) when shape changes. */
  downsample: boolean;
}

/** Input sizes below this use a CIFAR-style 3×3 stride-1 stem; at or above it the ImageNet stem. */
export const LARGE_STEM_MIN_INPUT = 96;

const DEFAULT_WIDTHS: Record<ModelConfig['arch'], number[]> = {
  tiny: [16, 32, 64],
  resnet18: [64, 64, 128, 256, 512],
  resnet50: [64, 64, 128, 256, 512],
};

const BLOCKS_PER_STAGE: Record<ModelConfig['arch'], number[]> = {
  tiny: [1, 1, 1],
  resnet18: [2, 2, 2, 2],
  resnet50: [3, 4, 6, 3],
};

const BOTTLENECK_EXPANSION = 4;

/**
 * Lay out the encoder for `config`.
 *
 * `widths` is `[stem, ...stages]` (one more than the number of stages) or just the
 * stage widths, in which case the stem takes the first stage's width.
 * @throws FedsslError MODEL_CONFIG_INVALID when `widths` has the wrong length.
 */
export function encoderPlan(config: ModelConfig): EncoderPlan {
  const stages = BLOCKS_PER_STAGE[config.arch];
  const widths = config.widths ?? DEFAULT_WIDTHS[config.arch];
  let stem: number;
  let stageWidths: number[];
  if (widths.length === stages.length + 1) {
    stem = widths[0]!;
    stageWidths = widths.slice(1);
  } else if (widths.length === stages.length) {
    stem = widths[0]!;
    stageWidths = widths.slice();
  } else {
    throw new FedsslError(
      'MODEL_CONFIG_INVALID',
      `widths for arch '${config.arch}' must have ${stages.length} or ${stages.length + 1} entries, got ${widths.length}`,
      { arch: config.arch, widths },
    );
  }
  const large = config.inputSize >= LARGE_STEM_MIN_INPUT;
  const bottleneck = config.arch === 'resnet50';
  const blocks: BlockPlan[] = [];
  let inCh = stem;
  stages.forEach((count, s) => {
    const mid = stageWidths[s]!;
    const out = bottleneck ? mid * BOTTLENECK_EXPANSION : mid;
    for (let b = 0; b < count; b++) {
      const stride = b === 0 && s > 0 ? 2 : 1;
      blocks.push({
        prefix: `encoder.layer${s + 1}.${b}`,
        kind: bottleneck ? 'bottleneck' : 'basic',
        stride,
        inChannels: inCh,
        midChannels: mid,
        outChannels: out,
        downsample: stride !== 1 || inCh !== out,
      });
      inCh = out;
    }
  });
  return {
    stem: large
      ? { kernel: 7, stride: 2, outChannels: stem, pool: true }
      : { kernel: 3, stride: 1, outChannels: stem, pool: false },
    blocks,
    featureDim: inCh,
    norm: config.norm,
  };
}

/**
 * Number of groups used by group normalization over `channels`: the largest divisor
 * of `channels` not above 32 (32 is the GroupNorm paper's default).
 */
export function groupNormGroups(channels: number): number {
  for (let g = Math.min(32, channels); g > 1; g--) if (channels % g === 0) return g;
  return 1;
}
