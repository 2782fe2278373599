import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fingerprint, fromBase64, sha256Hex, verifySignedModelManifest } from '@fedssl/shared/crypto';
import {
  coordinatorKeysSchema,
  signedModelManifestSchema,
  type ModelManifest,
} from '@fedssl/shared/protocol';
import type { AdminClient } from './admin-client';
import { CliError } from './io';

export interface PullOptions {
  version: string;
  outDir: string;
  /** Expected coordinator fingerprint (as printed by `GET /coordinator/keys`, compared out of band). */
  fingerprint?: string;
}

export interface PullResult {
  manifest: ModelManifest;
  coordinatorFingerprint: string;
  weightsPath: string;
  manifestPath: string;
  /** True when no --fingerprint pinned the coordinator key. */
  unpinned: boolean;
}

const normalizeFingerprint = (f: string): string => f.replace(/[\s:]/g, '').toLowerCase();

/**
 * Downloads a published model and writes `weights.fsw` + `manifest.json` into `outDir`
 * only after every check passed: the coordinator keys match `--fingerprint` (if given), the
 * manifest signature verifies with those keys, and the weights match the signed size and
 * SHA-256. On any mismatch nothing is written.
 */
export async function pullModel(client: AdminClient, opts: PullOptions): Promise<PullResult> {
  const keysParsed = coordinatorKeysSchema.safeParse(await client.get('/coordinator/keys'));
  if (!keysParsed.success)
    throw new CliError('PROTOCOL_INVALID_MESSAGE', 'coordinator keys response is malformed');
  const keys = keysParsed.data;
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

  const signedParsed = signedModelManifestSchema.safeParse(
    await client.get(`/models/${encodeURIComponent(opts.version)}`),
  );
  if (!signedParsed.success)
    throw new CliError('PROTOCOL_INVALID_MESSAGE', 'model manifest response is malformed');
  let manifest: ModelManifest;
  try {
    manifest = verifySignedModelManifest(signedParsed.data, signingPk);
  } catch {
    throw new CliError(
      'MANIFEST_SIGNATURE_INVALID',
      `manifest of ${opts.version} is not signed by the coordinator key; nothing written`,
    );
  }
  if (manifest.version !== opts.version) {
    throw new CliError(
      'MANIFEST_SIGNATURE_INVALID',
      `server answered manifest ${manifest.version} for ${opts.version}; nothing written`,
    );
  }

  const weights = await client.getBytes(`/models/${encodeURIComponent(opts.version)}/weights`);
  if (weights.length !== manifest.weightsBytes || sha256Hex(weights) !== manifest.weightsSha256) {
    throw new CliError(
      'MODEL_HASH_MISMATCH',
      `weights of ${opts.version} do not match the signed manifest (${weights.length} bytes, sha256 ${sha256Hex(weights)}); nothing written`,
    );
  }

  const weightsPath = join(opts.outDir, 'weights.fsw');
  const manifestPath = join(opts.outDir, 'manifest.json');
  mkdirSync(opts.outDir, { recursive: true });
  writeAtomic(weightsPath, weights);
  writeAtomic(manifestPath, new TextEncoder().encode(`${JSON.stringify(signedParsed.data, null, 2)}\n`));
  return {
    manifest,
    coordinatorFingerprint: actual,
    weightsPath,
    manifestPath,
    unpinned: opts.fingerprint === undefined,
  };
}

function writeAtomic(file: string, bytes: Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, file);
  } finally {
    if (existsSync(tmp)) rmSync(tmp, { force: true });
  }
}
