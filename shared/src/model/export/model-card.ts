import type { ModelManifest } from '../../protocol/messages';
import { encoderPlan } from '../architecture';
import { trainingConfigSchema, type TrainingConfig } from '../config';
import { countParams, featureDim, sharedParamSpecs } from '../spec';

/** The machine-readable model card written beside an exported model (`model-card.json`). */
export interface ModelCard {
  schema: 'fedssl-model-card/1';
  version: string;
  runId: string | null;
  round: number;
  createdAt: string;
  architecture: {
    arch: ModelManifest['model']['arch'];
    widths: number[];
    norm: ModelManifest['model']['norm'];
    featureDim: number;
    encoderParameters: number;
    projectorHidden: number;
    projectionDim: number;
  };
  input: {
    channels: 1;
    size: number;
    layout: { tfjs: 'NHWC'; pytorch: 'NCHW' };
    normalization: string;
  };
  federation: {
    strategy: string;
    /** The strategy with every option (e.g. FedAdam's β1, β2, τ, clipNorm); null when not signed in. */
    strategyOptions: Record<string, unknown> | null;
    /** Seed of the run's initial weights; null when not signed in. */
    seed: number | null;
    rounds: number;
    sites: { siteId: string; exampleCount: number }[];
    totalExamples: number;
  };
  /**
   * Local training hyperparameters, augmentation recipe included, as the run set them (an
   * absent `siteOptimizerState` is `reset`); null when unavailable.
   */
  hyperparameters: TrainingConfig | null;
  /**
   * Where {@link hyperparameters} come from: `manifest` (signed by the coordinator),
   * `run` (the run record, for versions published before manifests carried them, unsigned), or `none`.
   */
  hyperparametersSource: 'manifest' | 'run' | 'none';
  provenance: {
    weightsSha256: string;
    weightsBytes: number;
    parentVersion: string | null;
    parentSha256: string | null;
    coordinatorFingerprint: string;
    manifestKeyId: string;
  };
  files: Record<string, string>;
}

export interface ModelCardArgs {
  manifest: ModelManifest;
  keyId: string;
  coordinatorFingerprint: string;
  /** The run record's training config: used only when the manifest does not carry it (older versions). */
  training: TrainingConfig | null;
  /** Files written beside the card, name → what it is. */
  files: Record<string, string>;
}

export const INPUT_NORMALIZATION =
  'single-channel grayscale scaled to [0, 1] (8-bit v/255, 16-bit v/65535; DICOM after rescale and window); no mean/std normalization';

/** The model card of a published version (see {@link modelCardMarkdown} for the human one). */
export function buildModelCard(args: ModelCardArgs): ModelCard {
  const m = args.manifest;
  const signedTraining = m.hyperparameters
    ? trainingConfigSchema.safeParse(m.hyperparameters.training)
    : undefined;
  const hyperparameters = signedTraining?.success ? signedTraining.data : args.training;
  const hyperparametersSource = signedTraining?.success ? 'manifest' : args.training ? 'run' : 'none';
  const plan = encoderPlan(m.model);
  const encoderSpecs = sharedParamSpecs(m.model).filter((s) => s.part === 'encoder');
  return {
    schema: 'fedssl-model-card/1',
    version: m.version,
    runId: m.runId,
    round: m.round,
    createdAt: m.createdAt,
    architecture: {
      arch: m.model.arch,
      widths: [plan.stem.outChannels, ...new Set(plan.blocks.map((b) => b.midChannels))],
      norm: m.model.norm,
      featureDim: featureDim(m.model),
      encoderParameters: countParams(encoderSpecs),
      projectorHidden: m.model.projectorHidden,
      projectionDim: m.model.projectionDim,
    },
    input: {
      channels: 1,
      size: m.input?.size ?? m.model.inputSize,
      layout: { tfjs: 'NHWC', pytorch: 'NCHW' },
      normalization: m.input?.normalization ?? INPUT_NORMALIZATION,
    },
    federation: {
      strategy: m.strategy,
      strategyOptions: m.hyperparameters ? { ...m.hyperparameters.strategy } : null,
      seed: m.hyperparameters?.seed ?? null,
      rounds: m.round,
      sites: m.sites.map((s) => ({ siteId: s.siteId, exampleCount: s.exampleCount })),
      totalExamples: m.sites.reduce((n, s) => n + s.exampleCount, 0),
    },
    hyperparameters,
    hyperparametersSource,
    provenance: {
      weightsSha256: m.weightsSha256,
      weightsBytes: m.weightsBytes,
      parentVersion: m.parentVersion,
      parentSha256: m.parentSha256,
      coordinatorFingerprint: args.coordinatorFingerprint,
      manifestKeyId: args.keyId,
    },
    files: { ...args.files },
  };
}

/** How the sites' Adam started each round (`training.siteOptimizerState`; absent is `reset`). */
function siteOptimizerStateText(hp: TrainingConfig): string {
  return hp.siteOptimizerState === 'keep'
    ? "keep (each site's Adam moments and step count continue from its previous round)"
    : 'reset (fresh Adam moments every round)';
}

/** `MODEL_CARD.md`: the same facts for people, with loading snippets for TF.js and PyTorch. */
export function modelCardMarkdown(card: ModelCard): string {
  const a = card.architecture;
  const s = card.input.size;
  const hp = card.hyperparameters;
  const lines = [
    `# fedssl model ${card.version}`,
    '',
    `Self-supervised (BYOL + patient-metadata head) ${a.arch} encoder pretrained by federated learning` +
      ` across ${card.federation.sites.length} site(s); round ${card.round} of run ${card.runId ?? '(none)'}.`,
    '',
    '## Architecture',
    '',
    `- encoder: ${a.arch}, widths ${a.widths.join('/')}, ${a.norm} norm, ${a.encoderParameters.toLocaleString('en-US')} parameters, ${a.featureDim}-d globally average-pooled features`,
    `- BYOL projector and predictor: 2-layer MLPs (hidden ${a.projectorHidden}, output ${a.projectionDim})`,
    '',
    '## Input',
    '',
    `- ${s}×${s} pixels, 1 channel (${card.input.layout.tfjs} in TF.js, ${card.input.layout.pytorch} in PyTorch)`,
    `- normalization: ${card.input.normalization}`,
    '',
    '## Federation',
    '',
    `- strategy: ${card.federation.strategy}; ${card.federation.totalExamples} examples in the last round`,
    ...(card.federation.strategyOptions
      ? ['- strategy options: `' + JSON.stringify(card.federation.strategyOptions) + '`']
      : []),
    ...(card.federation.seed !== null ? [`- initial weights seed: ${card.federation.seed}`] : []),
    '',
    '| site | examples (last round) |',
    '| ---- | --------------------: |',
    ...card.federation.sites.map((x) => `| ${x.siteId} | ${x.exampleCount} |`),
    '',
    '## Hyperparameters',
    '',
    hp
      ? [
          `- local epochs ${hp.localEpochs}, batch size ${hp.batchSize}, learning rate ${hp.learningRate}, weight decay ${hp.weightDecay}`,
          `- BYOL target EMA τ ${hp.emaMomentum}; metadata loss weight λ ${hp.metadataWeight}`,
          `- local update: ${hp.localUpdate}${hp.localUpdate === 'fedema' ? ` (λ = ${hp.fedemaScaler})` : ''}`,
          `- site optimizer state between rounds: ${siteOptimizerStateText(hp)}`,
          '- augmentation: `' + JSON.stringify(hp.augmentation) + '`',
          '',
          card.hyperparametersSource === 'manifest'
            ? '(Signed by the coordinator in the manifest.)'
            : '(From the run record, not signed: this version predates hyperparameters in the manifest.)',
        ].join('\n')
      : '(not available: the run record could not be read)',
    '',
    '## Provenance',
    '',
    `- weights (fedssl-weights/1) SHA-256: \`${card.provenance.weightsSha256}\` (${card.provenance.weightsBytes} bytes), signed by coordinator key ${card.provenance.manifestKeyId}`,
    `- coordinator fingerprint: \`${card.provenance.coordinatorFingerprint}\``,
    `- parent: ${card.provenance.parentVersion ?? '(none)'} \`${card.provenance.parentSha256 ?? '-'}\``,
    `- created: ${card.createdAt}`,
    '',
    '## Files',
    '',
    ...Object.entries(card.files).map(([f, what]) => `- \`${f}\`: ${what}`),
    '',
    '## Load it',
    '',
    a.norm === 'group'
      ? `TensorFlow.js (\`model.json\` + \`weights.bin\`; group norm from stock layers, so the graph takes only the input size it was exported for: ${s} px unless exported with another \`inputSize\`, see \`model.inputs[0].shape\`):`
      : 'TensorFlow.js (`model.json` + `weights.bin`; inference-mode batch norm, any input size):',
    '',
    '```js',
    "const tf = require('@tensorflow/tfjs');",
    "const model = await tf.loadLayersModel('file:///path/to/model.json'); // tfjs-node; or an IOHandler",
    `const features = model.predict(tf.zeros([1, ${s}, ${s}, 1])); // [1, ${a.featureDim}]`,
    '```',
    '',
    'PyTorch (`model.safetensors`, torchvision ResNet names):',
    '',
    '```python',
    'import torch, torchvision',
    'from safetensors.torch import load_file',
    a.norm === 'group'
      ? `net = torchvision.models.${a.arch === 'resnet50' ? 'resnet50' : 'resnet18'}(num_classes=1000, norm_layer=lambda c: torch.nn.GroupNorm(max(g for g in range(1, min(32, c) + 1) if c % g == 0), c))`
      : `net = torchvision.models.${a.arch === 'resnet50' ? 'resnet50' : 'resnet18'}(num_classes=1000)`,
    'net.conv1 = torch.nn.Conv2d(1, net.conv1.out_channels, net.conv1.kernel_size, net.conv1.stride, net.conv1.padding, bias=False)',
    'net.fc = torch.nn.Identity()',
    'state = {k: v for k, v in load_file("model.safetensors").items() if not k.startswith(("projector.", "predictor."))}',
    `missing, unexpected = net.load_state_dict(state, strict=False)  # missing: ${a.norm === 'group' ? 'nothing (GroupNorm keeps no running statistics)' : 'only bn*.num_batches_tracked'}`,
    `features = net.eval()(torch.zeros(1, 1, ${s}, ${s}))  # [1, ${a.featureDim}]`,
    '```',
    '',
  ];
  if (a.arch === 'tiny' || s < 96) {
    lines.push(
      `Note: ${a.arch} at ${s} px uses a ${s < 96 ? '3×3 stride-1 stem without max-pool' : '7×7 stride-2 stem with max-pool'}` +
        (a.arch === 'tiny' ? ' and 3 stages' : '') +
        '; set `net.conv1` / `net.maxpool` (and the stages) to match before loading (docs/models.md).',
      '',
    );
  }
  return lines.join('\n');
}
