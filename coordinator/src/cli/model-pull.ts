import { join } from 'node:path';
import { fingerprint, fromBase64, sha256Hex, verifySignedModelManifest } from '@fedssl/shared/crypto';
import type { ModelCard, TrainingConfig } from '@fedssl/shared/model';
import { signedModelManifestSchema, type ModelManifest } from '@fedssl/shared/protocol';
import { exportModel, type ExportFormat } from '../models/export/export-model';
import type { AdminClient } from './admin-client';
import { CliError } from './io';
import { coordinatorKeysAnswer, modelListAnswer, modelVersionAnswer, runTrainingAnswer } from './responses';

export interface PullOptions {
  /** A version id, or `latest` (the most recently published version). */
  version: string;
  outDir: string;
  /** Output format (default `fsw`, the signed bytes as published). */
  format?: ExportFormat;
  /** Expected coordinator fingerprint (as printed by `GET /coordinator/keys`, compared out of band). */
  fingerprint?: string;
  /** `tfjs` only: input side the graph is built for (group-norm encoders; default the model's). */
  tfjsInputSize?: number;
}

export interface PullResult {
  manifest: ModelManifest;
  coordinatorFingerprint: string;
  format: ExportFormat;
  /** Names of the files written into `outDir`. */
  files: string[];
  /** The model card written beside the files (architecture, input, federation, hyperparameters). */
  card: ModelCard;
  weightsPath: string;
  manifestPath: string;
  /** True when no --fingerprint pinned the coordinator key. */
  unpinned: boolean;
}

const normalizeFingerprint = (f: string): string => f.replace(/[\s:]/g, '').toLowerCase();

/**
 * Downloads a published model and writes it into `outDir` in the asked format (see
 * models/export) with its signed manifest and a model card, only after every check
 * passed: the coordinator keys match `--fingerprint` (if given), the manifest signature
 * verifies with those keys, and the weights match the signed size and SHA-256. Nothing is
 * converted or written before that; on any mismatch nothing is written.
 */
export async function pullModel(client: AdminClient, opts: PullOptions): Promise<PullResult> {
  const keys = await client.getChecked('/coordinator/keys', coordinatorKeysAnswer);
  const signingPk = fromBase64(keys.signingPublicKey, 32);
  // Recompute rather than trust the server's `fingerprint` field.
  const actual = fingerprint(signingPk, fromBase64(keys.boxPublicKey, 32));
  if (
    opts.fingerprint !== undefined &&
    normalizeFingerprint(opts.fingerprint) !== normalizeFingerprint(actual)
  ) {
    throw new CliError(
      'COORDINATOR_FINGERPRINT_MISMATCH',
      `coordinator key fingerprint is "${actual}", expected "${opts.fingerprint}"; refusing to trust this coordinator`,
    );
  }

  const version = opts.version === 'latest' ? await latestVersion(client) : opts.version;
  // Only the signed document is checked: the answer also says whether the weights are still
  // there (weightsAvailable, prunedAt), which the signature does not cover.
  const answer = await client.getChecked(`/models/${encodeURIComponent(version)}`, modelVersionAnswer);
  const signedParsed = signedModelManifestSchema.safeParse({
    manifest: answer.manifest,
    signature: answer.signature,
    keyId: answer.keyId,
  });
  if (!signedParsed.success)
    throw new CliError('PROTOCOL_INVALID_MESSAGE', 'model manifest response is malformed');
  let manifest: ModelManifest;
  try {
    manifest = verifySignedModelManifest(signedParsed.data, signingPk);
  } catch {
    throw new CliError(
      'MANIFEST_SIGNATURE_INVALID',
      `manifest of ${version} is not signed by the coordinator key; nothing written`,
    );
  }
  if (manifest.version !== version) {
    throw new CliError(
      'MANIFEST_SIGNATURE_INVALID',
      `server answered manifest ${manifest.version} for ${version}; nothing written`,
    );
  }

  const weights = await client.getBytes(`/models/${encodeURIComponent(version)}/weights`);
  if (weights.length !== manifest.weightsBytes || sha256Hex(weights) !== manifest.weightsSha256) {
    throw new CliError(
      'MODEL_HASH_MISMATCH',
      `weights of ${version} do not match the signed manifest (${weights.length} bytes, sha256 ${sha256Hex(weights)}); nothing written`,
    );
  }

  // Verified: only now convert and write.
  const format = opts.format ?? 'fsw';
  const { files, card } = await exportModel({
    signed: signedParsed.data,
    manifest,
    weights,
    format,
    outDir: opts.outDir,
    coordinatorFingerprint: actual,
    // Newer manifests carry the hyperparameters signed; only older ones need the run record.
    training: manifest.runId && !manifest.hyperparameters ? await runTraining(client, manifest.runId) : null,
    tfjsInputSize: opts.tfjsInputSize,
  });
  return {
    manifest,
    coordinatorFingerprint: actual,
    format,
    files,
    card,
    weightsPath: join(opts.outDir, files[0]!),
    manifestPath: join(opts.outDir, 'manifest.json'),
    unpinned: opts.fingerprint === undefined,
  };
}

/** The most recently published version (the list is only used to pick it; it is verified like any other). */
async function latestVersion(client: AdminClient): Promise<string> {
  const versions = (await client.getChecked('/models', modelListAnswer)).map((m) => m.manifest);
  const last = versions
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.version.localeCompare(b.version))
    .pop();
  if (!last) throw new CliError('MODEL_VERSION_NOT_FOUND', 'no published model version yet');
  return last.version;
}

/** The run's training hyperparameters for the model card, or null when the run cannot be read. */
async function runTraining(client: AdminClient, runId: string): Promise<TrainingConfig | null> {
  try {
    const run = await client.getChecked(`/runs/${encodeURIComponent(runId)}`, runTrainingAnswer);
    return run.config.training;
  } catch {
    return null;
  }
}

/**
 * What the pulled model is, in a few lines for the terminal: architecture, input, federation and
 * hyperparameters from its model card.
 */
export function describeCard(card: ModelCard): string {
  const a = card.architecture;
  const hp = card.hyperparameters;
  const lines = [
    `  architecture: ${a.arch} (widths ${a.widths.join('/')}, ${a.norm} norm, ${a.featureDim}-d features)`,
    `  input: ${card.input.size}×${card.input.size}×${card.input.channels}; ${card.input.normalization}`,
    `  federation: round ${card.round} of run ${card.runId ?? '(none)'}, ${card.federation.sites.length} site(s), ${card.federation.totalExamples} examples; strategy ${card.federation.strategyOptions ? JSON.stringify(card.federation.strategyOptions) : card.federation.strategy}` +
      (card.federation.seed !== null ? `, seed ${card.federation.seed}` : ''),
    hp
      ? `  hyperparameters (${card.hyperparametersSource === 'manifest' ? 'signed' : 'from the run record, unsigned'}): ${JSON.stringify(hp)}`
      : '  hyperparameters: not available',
    `  parent: ${card.provenance.parentVersion ?? '(none)'} ${card.provenance.parentSha256 ?? ''}`.trimEnd(),
  ];
  return `${lines.join('\n')}\n`;
}
