import { Inject, Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { decodeWeights, encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { sha256Hex, signModelManifest } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { INPUT_NORMALIZATION, type ModelConfig } from '@fedssl/shared/model';
import {
  MAX_CHUNK_BYTES,
  idSchema,
  signedModelManifestSchema,
  type ModelHyperparameters,
  type ModelManifest,
  type SignedModelManifest,
} from '@fedssl/shared/protocol';
import { CONFIG, LOGGER, type CoordinatorConfig } from '../config/config';
import { CLOCK, isoNow, type Clock } from '../config/clock';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';

export const WEIGHTS_FILE = 'weights.fsw';
export const MANIFEST_FILE = 'manifest.json';
/** Files converted from a version for download (TF.js, safetensors, model card); derived, deletable. */
export const EXPORTS_DIR = 'exports';
const TMP_PREFIX = '.tmp-';

/** Everything needed to publish one global model version. */
export interface PublishArgs {
  version: string;
  runId: string | null;
  round: number;
  model: ModelConfig;
  weights: NamedTensors;
  parentVersion: string | null;
  parentSha256: string | null;
  sites: { siteId: string; exampleCount: number }[];
  strategy: string;
  /** The run's training settings, strategy options and seed, signed into the manifest. */
  hyperparameters?: ModelHyperparameters;
}

/**
 * Version ids become directory names, so beyond the protocol id pattern they must not start
 * with a dot ('..', hidden temp dirs).
 */
export function isValidVersion(version: string): boolean {
  return idSchema.safeParse(version).success && !version.startsWith('.');
}

function writeFileDurable(file: string, bytes: Uint8Array): void {
  const fd = openSync(file, 'wx', 0o644);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Published global models: `<dataDir>/models/<version>/{weights.fsw, manifest.json}`.
 *
 * A version is written into a hidden temp directory and renamed into place in one step, so
 * readers see either nothing or a complete, signed version; a crash leaves only a temp
 * directory, which the next start removes. Versions are immutable once published.
 */
@Injectable()
export class ModelStoreService {
  private readonly root: string;
  private readonly log: Logger;
  private readonly manifests = new Map<string, SignedModelManifest>();

  constructor(
    @Inject(CONFIG) config: CoordinatorConfig,
    @Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'ModelStoreService' });
    this.root = join(config.dataDir, 'models');
    mkdirSync(this.root, { recursive: true });
    for (const entry of readdirSync(this.root)) {
      if (entry.startsWith(TMP_PREFIX)) {
        rmSync(join(this.root, entry), { recursive: true, force: true });
        this.log.warn({ entry }, 'removed an unfinished model publication');
      }
    }
  }

  /**
   * Encodes, hashes, signs and atomically stores a new version.
   * @throws FedsslError MODEL_VERSION_EXISTS, PROTOCOL_INVALID_MESSAGE (bad version id or manifest)
   */
  publish(args: PublishArgs): SignedModelManifest {
    if (!isValidVersion(args.version)) {
      throw new FedsslError(
        'PROTOCOL_INVALID_MESSAGE',
        `model version "${args.version}" must match [A-Za-z0-9._:-]{1,128} and not start with "."`,
      );
    }
    const dir = this.dir(args.version);
    if (existsSync(dir)) {
      throw new FedsslError('MODEL_VERSION_EXISTS', `model version ${args.version} is already published`);
    }
    const bytes = encodeWeights(args.weights);
    const manifest: ModelManifest = {
      version: args.version,
      runId: args.runId,
      round: args.round,
      model: args.model,
      weightsSha256: sha256Hex(bytes),
      weightsBytes: bytes.length,
      parentVersion: args.parentVersion,
      parentSha256: args.parentSha256,
      sites: args.sites.map((s) => ({ siteId: s.siteId, exampleCount: s.exampleCount })),
      strategy: args.strategy,
      createdAt: isoNow(this.clock),
      input: { channels: 1, size: args.model.inputSize, normalization: INPUT_NORMALIZATION },
      ...(args.hyperparameters ? { hyperparameters: args.hyperparameters } : {}),
    };
    const signed = signModelManifest(manifest, this.keys.keys.signing.secretKey, this.keys.keyId);

    const tmp = join(this.root, `${TMP_PREFIX}${args.version}-${randomBytes(6).toString('hex')}`);
    mkdirSync(tmp);
    try {
      writeFileDurable(join(tmp, WEIGHTS_FILE), bytes);
      writeFileDurable(join(tmp, MANIFEST_FILE), new TextEncoder().encode(JSON.stringify(signed, null, 2)));
      // Directory rename is atomic; it fails if a concurrent publisher won the race.
      renameSync(tmp, dir);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      if (existsSync(dir))
        throw new FedsslError('MODEL_VERSION_EXISTS', `model version ${args.version} is already published`);
      throw e;
    }
    this.manifests.set(args.version, signed);
    this.log.info(
      {
        version: args.version,
        runId: args.runId,
        round: args.round,
        bytes: bytes.length,
        sha256: manifest.weightsSha256,
      },
      'model version published',
    );
    return signed;
  }

  /** The signed manifest of a version, or undefined when it does not exist. */
  getManifest(version: string): SignedModelManifest | undefined {
    const cached = this.manifests.get(version);
    // Served signed by the current key: versions outlive coordinator key rotations.
    if (cached) return this.keys.currentManifest(cached);
    if (!isValidVersion(version)) return undefined;
    const file = join(this.dir(version), MANIFEST_FILE);
    if (!existsSync(file)) return undefined;
    const signed = signedModelManifestSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
    this.manifests.set(version, signed);
    return this.keys.currentManifest(signed);
  }

  /** Like {@link getManifest} but throws MODEL_VERSION_NOT_FOUND. */
  requireManifest(version: string): SignedModelManifest {
    const m = this.getManifest(version);
    if (!m)
      throw new FedsslError('MODEL_VERSION_NOT_FOUND', `no published model version ${version}`, { version });
    return m;
  }

  /**
   * Decoded weights of a version, checked against the manifest's SHA-256 (catches disk corruption).
   * @throws FedsslError MODEL_VERSION_NOT_FOUND, MODEL_HASH_MISMATCH
   */
  readWeights(version: string): NamedTensors {
    const manifest = this.requireManifest(version).manifest;
    const bytes = new Uint8Array(readFileSync(this.requireWeightsPath(version)));
    if (sha256Hex(bytes) !== manifest.weightsSha256) {
      throw new FedsslError(
        'MODEL_HASH_MISMATCH',
        `stored weights of ${version} do not match their manifest hash`,
      );
    }
    return decodeWeights(bytes).tensors;
  }

  /**
   * Bytes `[offset, min(offset + length, size))` of a version's encoded weights.
   * @throws FedsslError MODEL_VERSION_NOT_FOUND; MODEL_CHUNK_OUT_OF_RANGE when offset is not
   *   inside the file or length is not in 1..MAX_CHUNK_BYTES.
   */
  readChunk(version: string, offset: number, length: number): Uint8Array {
    const manifest = this.requireManifest(version).manifest;
    const size = manifest.weightsBytes;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) {
      throw new FedsslError(
        'MODEL_CHUNK_OUT_OF_RANGE',
        `offset ${offset} is outside 0..${size - 1} of ${version}`,
      );
    }
    if (!Number.isSafeInteger(length) || length < 1 || length > MAX_CHUNK_BYTES) {
      throw new FedsslError('MODEL_CHUNK_OUT_OF_RANGE', `length ${length} is outside 1..${MAX_CHUNK_BYTES}`);
    }
    const n = Math.min(length, size - offset);
    const out = new Uint8Array(n);
    const fd = openSync(this.requireWeightsPath(version), 'r');
    try {
      if (fstatSync(fd).size !== size) {
        throw new FedsslError('MODEL_HASH_MISMATCH', `stored weights of ${version} have the wrong size`);
      }
      let got = 0;
      while (got < n) {
        const r = readSync(fd, out, got, n - got, offset + got);
        if (r === 0) break;
        got += r;
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }

  /** Path of a version's encoded weights (for streaming responses). */
  weightsPath(version: string): string {
    return join(this.dir(version), WEIGHTS_FILE);
  }

  /** False when the version's weights were pruned (or it does not exist). */
  hasWeights(version: string): boolean {
    return isValidVersion(version) && existsSync(this.weightsPath(version));
  }

  /**
   * {@link weightsPath} of a published version whose weights are still there.
   * @throws FedsslError MODEL_VERSION_NOT_FOUND, MODEL_WEIGHTS_NOT_FOUND (pruned)
   */
  requireWeightsPath(version: string): string {
    this.requireManifest(version);
    const file = this.weightsPath(version);
    if (!existsSync(file)) {
      throw new FedsslError(
        'MODEL_WEIGHTS_NOT_FOUND',
        `the weights of ${version} were deleted by the retention policy; its signed manifest is kept`,
        { version },
      );
    }
    return file;
  }

  /** Directory for files converted from a version (created on demand by the exporter). */
  exportsDir(version: string): string {
    return join(this.dir(version), EXPORTS_DIR);
  }

  /**
   * Retention: deletes a version's weights and exports, keeping its signed manifest (the parent
   * hash chain stays readable). Idempotent.
   * @returns bytes freed.
   */
  deleteWeights(version: string): number {
    this.requireManifest(version);
    let freed = 0;
    const file = this.weightsPath(version);
    if (existsSync(file)) {
      freed += statSync(file).size;
      rmSync(file, { force: true });
    }
    const exports = this.exportsDir(version);
    if (existsSync(exports)) {
      for (const f of readdirSync(exports)) freed += statSync(join(exports, f)).size;
      rmSync(exports, { recursive: true, force: true });
    }
    this.log.info({ version, bytesFreed: freed }, 'model weights pruned');
    return freed;
  }

  /** All published versions, oldest first (by createdAt, then version). */
  list(): SignedModelManifest[] {
    const out: SignedModelManifest[] = [];
    for (const entry of readdirSync(this.root)) {
      if (entry.startsWith(TMP_PREFIX) || !statSync(join(this.root, entry)).isDirectory()) continue;
      try {
        const m = this.getManifest(entry);
        if (m) out.push(m);
      } catch (e) {
        // One unreadable manifest must not hide every other version from the listing.
        this.log.warn({ version: entry, err: e }, 'skipping unreadable model manifest');
      }
    }
    return out.sort(
      (a, b) =>
        a.manifest.createdAt.localeCompare(b.manifest.createdAt) ||
        a.manifest.version.localeCompare(b.manifest.version),
    );
  }

  private dir(version: string): string {
    return join(this.root, version);
  }
}
