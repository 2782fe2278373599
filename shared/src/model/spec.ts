import { FedsslError } from '../errors';
import { encoderPlan } from './architecture';
import type { ModelConfig } from './config';

/** Which sub-network a parameter belongs to. */
export type ModelPart = 'encoder' | 'projector' | 'predictor' | 'metadataHead';

/** How a parameter is initialised for the first global version. */
export type InitKind = 'heNormal' | 'glorotUniform' | 'zeros' | 'ones';

/** One parameter tensor of the model, as declared by {@link describeModel}. */
export interface ParamSpec {
  /** torchvision-style dotted name, e.g. `encoder.layer1.0.conv1.weight`. */
  name: string;
  /** tfjs layout: convolutions HWIO `[kh, kw, in, out]`, linear layers `[in, out]`. */
  shape: number[];
  part: ModelPart;
  /** Aggregated by the coordinator (true) or kept on the site (false). */
  shared: boolean;
  /** Updated by the optimizer (false for batch-norm running statistics). */
  trainable: boolean;
  init: InitKind;
}

/** Options of {@link describeModel}. */
export interface DescribeModelOptions {
  /** Number of site-local metadata classes; when absent or 0 the metadata head is not declared. */
  metadataClasses?: number;
}

function conv(name: string, kernel: number, inCh: number, outCh: number): ParamSpec {
  return {
    name: `${name}.weight`,
    shape: [kernel, kernel, inCh, outCh],
    part: 'encoder',
    shared: true,
    trainable: true,
    init: 'heNormal',
  };
}

/**
 * Encoder normalization parameters. With batch norm the running mean/variance are
 * declared as NON-trainable but SHARED encoder state: sites send their deltas and the
 * coordinator averages them like weights, so the published encoder carries usable
 * inference statistics (FedAvg of BN statistics, as in FedAvg-BYOL baselines) instead
 * of needing a recalibration pass on data it never sees. Group norm has no running state.
 */
function norm(
  name: string,
  channels: number,
  kind: ModelConfig['norm'],
  part: ModelPart,
  shared: boolean,
): ParamSpec[] {
  const specs: ParamSpec[] = [
    { name: `${name}.weight`, shape: [channels], part, shared, trainable: true, init: 'ones' },
    { name: `${name}.bias`, shape: [channels], part, shared, trainable: true, init: 'zeros' },
  ];
  if (kind === 'batch' && part === 'encoder') {
    specs.push(
      { name: `${name}.running_mean`, shape: [channels], part, shared, trainable: false, init: 'zeros' },
      { name: `${name}.running_var`, shape: [channels], part, shared, trainable: false, init: 'ones' },
    );
  }
  return specs;
}

/**
 * Linear → BatchNorm → ReLU → Linear, named like `nn.Sequential` (indices 0, 1, 3).
 * The MLP norms use batch statistics in every mode (projector, predictor and metadata
 * head only run during training), so they declare no running statistics.
 */
function mlp(
  prefix: string,
  part: ModelPart,
  shared: boolean,
  inDim: number,
  hidden: number,
  outDim: number,
): ParamSpec[] {
  return [
    {
      name: `${prefix}.0.weight`,
      shape: [inDim, hidden],
      part,
      shared,
      trainable: true,
      init: 'glorotUniform',
    },
    { name: `${prefix}.0.bias`, shape: [hidden], part, shared, trainable: true, init: 'zeros' },
    ...norm(`${prefix}.1`, hidden, 'batch', part, shared),
    {
      name: `${prefix}.3.weight`,
      shape: [hidden, outDim],
      part,
      shared,
      trainable: true,
      init: 'glorotUniform',
    },
    { name: `${prefix}.3.bias`, shape: [outDim], part, shared, trainable: true, init: 'zeros' },
  ];
}

/**
 * Declare every parameter of the model: the ONE place that fixes names, shapes, and
 * which parts are shared. Shared (aggregated): online encoder, projector, predictor.
 * Site-local: the metadata head (`metadata_head.*`). The BYOL target network is a
 * site-local copy of encoder + projector and reuses their specs; it is not listed here.
 *
 * Order is deterministic (torchvision `state_dict` order) and is the order of deltas.
 * @example
 * describeModel(tinyModelConfig(32), { metadataClasses: 10 }).filter((s) => s.shared)
 * @throws FedsslError MODEL_CONFIG_INVALID for inconsistent widths or class count.
 */
export function describeModel(config: ModelConfig, opts: DescribeModelOptions = {}): ParamSpec[] {
  const plan = encoderPlan(config);
  const specs: ParamSpec[] = [];
  specs.push(conv('encoder.conv1', plan.stem.kernel, 1, plan.stem.outChannels));
  specs.push(...norm('encoder.bn1', plan.stem.outChannels, plan.norm, 'encoder', true));
  for (const b of plan.blocks) {
    if (b.kind === 'basic') {
      specs.push(conv(`${b.prefix}.conv1`, 3, b.inChannels, b.midChannels));
      specs.push(...norm(`${b.prefix}.bn1`, b.midChannels, plan.norm, 'encoder', true));
      specs.push(conv(`${b.prefix}.conv2`, 3, b.midChannels, b.outChannels));
      specs.push(...norm(`${b.prefix}.bn2`, b.outChannels, plan.norm, 'encoder', true));
    } else {
      specs.push(conv(`${b.prefix}.conv1`, 1, b.inChannels, b.midChannels));
      specs.push(...norm(`${b.prefix}.bn1`, b.midChannels, plan.norm, 'encoder', true));
      specs.push(conv(`${b.prefix}.conv2`, 3, b.midChannels, b.midChannels));
      specs.push(...norm(`${b.prefix}.bn2`, b.midChannels, plan.norm, 'encoder', true));
      specs.push(conv(`${b.prefix}.conv3`, 1, b.midChannels, b.outChannels));
      specs.push(...norm(`${b.prefix}.bn3`, b.outChannels, plan.norm, 'encoder', true));
    }
    if (b.downsample) {
      specs.push(conv(`${b.prefix}.downsample.0`, 1, b.inChannels, b.outChannels));
      specs.push(...norm(`${b.prefix}.downsample.1`, b.outChannels, plan.norm, 'encoder', true));
    }
  }
  specs.push(
    ...mlp('projector', 'projector', true, plan.featureDim, config.projectorHidden, config.projectionDim),
  );
  specs.push(
    ...mlp(
      'predictor',
      'predictor',
      true,
      config.projectionDim,
      config.projectorHidden,
      config.projectionDim,
    ),
  );
  const classes = opts.metadataClasses ?? 0;
  if (!Number.isInteger(classes) || classes < 0) {
    throw new FedsslError(
      'MODEL_CONFIG_INVALID',
      `metadataClasses must be a non-negative integer, got ${classes}`,
    );
  }
  if (classes > 0) {
    specs.push(
      ...mlp('metadata_head', 'metadataHead', false, plan.featureDim, config.metadataHidden, classes),
    );
  }
  return specs;
}

/** The shared (aggregated) parameters only, in delta order. */
export function sharedParamSpecs(config: ModelConfig): ParamSpec[] {
  return describeModel(config).filter((s) => s.shared);
}

/** Specs of the parts the BYOL target network copies (encoder + projector). */
export function targetParamSpecs(config: ModelConfig): ParamSpec[] {
  return describeModel(config).filter((s) => s.part === 'encoder' || s.part === 'projector');
}

/** Width of the encoder's pooled feature vector. */
export function featureDim(config: ModelConfig): number {
  return encoderPlan(config).featureDim;
}

/** Total number of scalars in `specs`. */
export function countParams(specs: readonly ParamSpec[]): number {
  return specs.reduce((n, s) => n + shapeSize(s.shape), 0);
}

/** Number of elements of a tensor of `shape`. */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
