import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import {
  buildModelCard,
  encodeSafetensors,
  type ModelCard,
  type ModelConfig,
  modelCardMarkdown,
  sharedParamSpecs,
  tfjsExportInputSize,
  toTorchStateDict,
  type TrainingConfig,
} from '@fedssl/shared/model';
import type { ModelManifest, SignedModelManifest } from '@fedssl/shared/protocol';

export const EXPORT_FORMATS = ['fsw', 'tfjs', 'safetensors'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export interface ExportArgs {
  /** The signed manifest as served (written beside the export for re-verification). */
  signed: SignedModelManifest;
  /** The manifest AFTER its signature was verified. */
  manifest: ModelManifest;
  /** The encoded weights AFTER their size and SHA-256 were checked against `manifest`. */
  weights: Uint8Array;
  format: ExportFormat;
  outDir: string;
  coordinatorFingerprint: string;
  /**
   * The run record's training hyperparameters, for versions whose manifest does not carry them
   * (signed) yet; null when unavailable or not needed.
   */
  training: TrainingConfig | null;
  /**
   * `tfjs` only: side of the square input the graph is built for (default the model's
   * `inputSize`). Group-norm graphs take only that size; batch-norm graphs take any.
   */
  tfjsInputSize?: number;
}

const FILE_DESCRIPTIONS: Record<string, string> = {
  'weights.fsw': 'all shared weights (encoder, projector, predictor) in fedssl-weights/1, the signed bytes',
  'model.safetensors':
    'encoder with torchvision ResNet names (OIHW kernels) + projector.* and predictor.* ([out, in] linear weights)',
  'weights.bin': 'TF.js weights of the encoder',
  'manifest.json': "the coordinator-signed manifest (verify with the coordinator's Ed25519 key)",
  'model-card.json': 'this model card, machine-readable',
  'MODEL_CARD.md': 'this model card',
};

/**
 * Converts a verified published version into files for ML engineers, in `outDir`:
 * `fsw` (the signed bytes as is), `safetensors` (PyTorch, torchvision names) or `tfjs`
 * (LayersModel of the encoder), each with `manifest.json`, `model-card.json` and
 * `MODEL_CARD.md`. Everything is produced in a hidden temp directory inside `outDir` and
 * moved into place only when every file is ready. Call it only after the manifest
 * signature and the weights hash were verified.
 * @returns the names of the files written, and the model card.
 */
export async function exportModel(args: ExportArgs): Promise<{ files: string[]; card: ModelCard }> {
  const { manifest } = args;
  mkdirSync(args.outDir, { recursive: true });
  const tmp = join(args.outDir, `.fedssl-export-${randomBytes(6).toString('hex')}`);
  mkdirSync(tmp);
  try {
    const main = await writeFormat(args, tmp);
    const files = [...main, 'manifest.json', 'model-card.json', 'MODEL_CARD.md'];
    const describe = (f: string): string =>
      f === 'model.json'
        ? tfjsTopologyDescription(manifest.model, args.tfjsInputSize)
        : (FILE_DESCRIPTIONS[f] ?? f);
    writeFileSync(join(tmp, 'manifest.json'), `${JSON.stringify(args.signed, null, 2)}\n`);
    const card = buildModelCard({
      manifest,
      keyId: args.signed.keyId,
      coordinatorFingerprint: args.coordinatorFingerprint,
      training: args.training,
      files: Object.fromEntries(files.map((f) => [f, describe(f)])),
    });
    writeFileSync(join(tmp, 'model-card.json'), `${JSON.stringify(card, null, 2)}\n`);
    writeFileSync(join(tmp, 'MODEL_CARD.md'), modelCardMarkdown(card));
    for (const f of readdirSync(tmp)) renameSync(join(tmp, f), join(args.outDir, f));
    return { files, card };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** What `model.json` holds: the graph's normalization and the input it takes. */
function tfjsTopologyDescription(model: ModelConfig, inputSize: number | undefined): string {
  if (model.norm === 'batch')
    return 'TF.js LayersModel topology of the encoder (inference-mode batch norm; any input size)';
  const s = tfjsExportInputSize(model, inputSize);
  return `TF.js LayersModel topology of the encoder (group norm from stock layers; input fixed at ${s}×${s}×1)`;
}

function sharedWeights(args: ExportArgs): NamedTensors {
  return decodeWeights(args.weights, sharedParamSpecs(args.manifest.model)).tensors;
}

async function writeFormat(args: ExportArgs, dir: string): Promise<string[]> {
  const m = args.manifest;
  switch (args.format) {
    case 'fsw':
      writeFileSync(join(dir, 'weights.fsw'), args.weights);
      return ['weights.fsw'];
    case 'safetensors': {
      const stateDict = toTorchStateDict(m.model, sharedWeights(args));
      const metadata: Record<string, string> = {
        format: 'pt',
        'fedssl.version': m.version,
        'fedssl.run_id': m.runId ?? '',
        'fedssl.round': String(m.round),
        'fedssl.arch': m.model.arch,
        'fedssl.input_size': String(m.model.inputSize),
        'fedssl.weights_sha256': m.weightsSha256,
        'fedssl.coordinator_fingerprint': args.coordinatorFingerprint,
        'fedssl.signed_manifest': JSON.stringify(args.signed),
      };
      writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(stateDict, metadata));
      return ['model.safetensors'];
    }
    case 'tfjs': {
      const weights = sharedWeights(args);
      // TensorFlow is loaded only for this format (the coordinator CLI does not need it otherwise).
      const { writeTfjsEncoder } = await import('./tfjs-export.js');
      await writeTfjsEncoder(
        m.model,
        weights,
        dir,
        {
          fedssl: {
            version: m.version,
            runId: m.runId,
            round: m.round,
            weightsSha256: m.weightsSha256,
            inputSize: m.model.inputSize,
            norm: m.model.norm,
          },
        },
        args.tfjsInputSize,
      );
      return ['model.json', 'weights.bin'];
    }
  }
}
