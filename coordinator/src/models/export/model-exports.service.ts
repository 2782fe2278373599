import { Inject, Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { sha256Hex } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  buildModelCard,
  modelCardMarkdown,
  storedZip,
  tfjsExportInputSize,
  type ModelConfig,
} from '@fedssl/shared/model';
import { LOGGER } from '../../config/config';
import { CoordinatorKeysService } from '../../keys/coordinator-keys.service';
import { ModelStoreService } from '../model-store.service';
import { exportModel } from './export-model';

/** What the console (and any client) can download besides the raw weights. */
export const DOWNLOAD_FORMATS = ['tfjs', 'safetensors', 'card'] as const;
export type DownloadFormat = (typeof DOWNLOAD_FORMATS)[number];

/** One downloadable file. */
export interface Download {
  /** Suggested file name. */
  name: string;
  type: string;
  data: Uint8Array;
}

/** Cached export file per format, in the version's `exports/` directory (deleted by retention). */
const CACHED: Record<Exclude<DownloadFormat, 'card'>, { file: string; type: string; suffix: string }> = {
  tfjs: { file: 'model-tfjs.zip', type: 'application/zip', suffix: '-tfjs.zip' },
  safetensors: { file: 'model.safetensors', type: 'application/octet-stream', suffix: '.safetensors' },
};

/** Options of a download (from the query string, unparsed). */
export interface DownloadOptions {
  /** `tfjs` only: side in pixels of the input the graph is built for (group-norm encoders). */
  inputSize?: unknown;
}

/**
 * Published versions as files for people: a TF.js LayersModel (zip of `model.json`,
 * `weights.bin`, the signed manifest and the model card), safetensors, or the model card
 * alone. Converted once from the stored weights (checked against the manifest hash) and kept in
 * `models/<version>/exports/`; the card is built from the signed manifest, so it stays
 * available after retention pruned the weights.
 */
@Injectable()
export class ModelExportsService {
  private readonly log: Logger;
  private readonly inFlight = new Map<string, Promise<Uint8Array>>();

  constructor(
    @Inject(ModelStoreService) private readonly store: ModelStoreService,
    @Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'ModelExportsService' });
  }

  /**
   * `opts.inputSize` builds a group-norm `tfjs` graph for another input size (e.g. 224 to
   * fine-tune at 224 px); each size is converted once and cached. Batch-norm graphs take any
   * size, so for them the size is only checked.
   * @throws FedsslError PROTOCOL_INVALID_MESSAGE (unknown format, inputSize not a whole number
   *   or given for another format), MODEL_CONFIG_INVALID (inputSize outside [16, 512]),
   *   MODEL_VERSION_NOT_FOUND, MODEL_WEIGHTS_NOT_FOUND (pruned), MODEL_HASH_MISMATCH (weights
   *   on disk corrupted)
   */
  async download(version: string, format: string, opts: DownloadOptions = {}): Promise<Download> {
    if (!(DOWNLOAD_FORMATS as readonly string[]).includes(format)) {
      throw new FedsslError(
        'PROTOCOL_INVALID_MESSAGE',
        `format "${format.slice(0, 40)}" is not one of ${DOWNLOAD_FORMATS.join(', ')}`,
      );
    }
    const requested = parseInputSize(opts.inputSize, format);
    const signed = this.store.requireManifest(version);
    if (format === 'card') {
      const card = buildModelCard({
        manifest: signed.manifest,
        keyId: signed.keyId,
        coordinatorFingerprint: this.keys.publicKeys().fingerprint,
        training: null,
        files: { 'MODEL_CARD.md': 'this model card' },
      });
      return {
        name: `${version}.MODEL_CARD.md`,
        type: 'text/markdown; charset=utf-8',
        data: new TextEncoder().encode(modelCardMarkdown(card)),
      };
    }
    const c = CACHED[format as keyof typeof CACHED];
    const size = tfjsSizeVariant(signed.manifest.model, requested);
    const key = `${version}\n${format}\n${size ?? ''}`;
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.cached(version, format as keyof typeof CACHED, size).finally(() =>
        this.inFlight.delete(key),
      );
      this.inFlight.set(key, pending);
    }
    return { name: `${version}${withSize(c.suffix, size)}`, type: c.type, data: await pending };
  }

  private async cached(
    version: string,
    format: keyof typeof CACHED,
    tfjsInputSize: number | undefined,
  ): Promise<Uint8Array> {
    const dir = this.store.exportsDir(version);
    const file = join(dir, withSize(CACHED[format].file, tfjsInputSize));
    const weightsPath = this.store.requireWeightsPath(version);
    if (existsSync(file)) return new Uint8Array(readFileSync(file));

    const signed = this.store.requireManifest(version);
    const weights = new Uint8Array(readFileSync(weightsPath));
    if (
      weights.length !== signed.manifest.weightsBytes ||
      sha256Hex(weights) !== signed.manifest.weightsSha256
    ) {
      throw new FedsslError(
        'MODEL_HASH_MISMATCH',
        `stored weights of ${version} do not match their manifest hash`,
      );
    }
    mkdirSync(dir, { recursive: true });
    const tmp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
    try {
      const { files } = await exportModel({
        signed,
        manifest: signed.manifest,
        weights,
        format,
        outDir: tmp,
        coordinatorFingerprint: this.keys.publicKeys().fingerprint,
        training: null,
        tfjsInputSize,
      });
      const bytes =
        format === 'tfjs'
          ? storedZip(files.map((name) => ({ name, data: new Uint8Array(readFileSync(join(tmp, name))) })))
          : new Uint8Array(readFileSync(join(tmp, 'model.safetensors')));
      const part = join(tmp, 'out');
      writeFileSync(part, bytes);
      renameSync(part, file);
      // At most one non-default size on disk per version: sizes are the caller's choice.
      for (const f of readdirSync(dir))
        if (/^model-tfjs-\d+px\.zip$/.test(f) && join(dir, f) !== file) rmSync(join(dir, f), { force: true });
      this.log.info({ version, format, tfjsInputSize, bytes: bytes.length }, 'model export written');
      return bytes;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
}

/** The `inputSize` query value as a number, or undefined when absent. */
function parseInputSize(raw: unknown, format: string): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (typeof raw !== 'string' || !/^\d{1,6}$/.test(raw)) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `inputSize must be one whole number of pixels, got ${JSON.stringify(raw).slice(0, 40)}`,
    );
  }
  if (format !== 'tfjs')
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `inputSize applies to the tfjs format only, not ${format}`,
    );
  return Number(raw);
}

/**
 * The size a tfjs export is built for when it differs from the default graph, else undefined
 * (one cached file): batch-norm graphs take any size, and the model's own size is the default.
 * @throws FedsslError MODEL_CONFIG_INVALID when `requested` is outside [16, 512]
 */
function tfjsSizeVariant(model: ModelConfig, requested: number | undefined): number | undefined {
  const size = tfjsExportInputSize(model, requested);
  return model.norm === 'group' && size !== model.inputSize ? size : undefined;
}

/** `model-tfjs.zip` → `model-tfjs-224px.zip` for a non-default input size. */
function withSize(name: string, size: number | undefined): string {
  return size === undefined ? name : name.replace(/\.zip$/, `-${size}px.zip`);
}
