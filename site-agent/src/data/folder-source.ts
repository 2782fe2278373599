import { readFile, readdir, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import type { Logger } from 'pino';
import sharp from 'sharp';
import { FedsslError } from '@fedssl/shared/errors';
import { parseCsvTable } from './csv';
import {
  DEFAULT_LIMITS,
  SkipCounter,
  pathTag,
  skip,
  type DataLimits,
  type DataSource,
  type Pseudonymizer,
  type ReadResult,
  type SourceItem,
  type SourceListing,
  readBoundedFile,
} from './data-source';

export { SkipCounter, pathTag, type SkipReason } from './data-source';

/**
 * A folder of PNG/JPEG images (searched recursively), optionally described by a CSV
 * manifest with a file column, a patient column and other categorical columns.
 *
 * File paths can contain patient names, so they are never logged at info level: counts
 * are logged, and a path appears only at debug level and only as a short hash.
 */

/** File extensions read as images (case-insensitive). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg'];

/** One image found in the source, before decoding. */
export interface SourceImage {
  /** Path relative to the data root, with `/` separators. */
  file: string;
  /** Raw patient id from the manifest (null when none). Pseudonymized before any use. */
  patientId: string | null;
  /** Other manifest columns, as categorical metadata. */
  tags: Record<string, string>;
}

function toPosix(p: string): string {
  return p.split(sep).join('/');
}

/** Normalize a manifest path: `/` separators, no leading `./`. */
function normalizeManifestPath(p: string): string {
  let s = p.trim().replace(/\\/g, '/');
  while (s.startsWith('./')) s = s.slice(2);
  return s;
}

/**
 * Every image file under `root`, relative with `/` separators, sorted by code unit so the
 * order (and so the dataset) is the same on every run and platform. Hidden files and
 * folders (starting with ".") are skipped; symlinked folders are not followed (no loops).
 * @throws FedsslError DATA_SOURCE_INVALID when `root` is not a readable folder.
 */
export async function listImageFiles(root: string): Promise<string[]> {
  const abs = resolve(root);
  let st;
  try {
    st = await stat(abs);
  } catch {
    throw new FedsslError('DATA_SOURCE_INVALID', `data folder not found or not readable: ${abs}`);
  }
  if (!st.isDirectory()) throw new FedsslError('DATA_SOURCE_INVALID', `data path is not a folder: ${abs}`);
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const full = join(dir, e.name);
      if (e.isDirectory()) {
        await walk(full);
        continue;
      }
      if (!IMAGE_EXTENSIONS.some((ext) => e.name.toLowerCase().endsWith(ext))) continue;
      if (e.isFile() || e.isSymbolicLink()) out.push(toPosix(relative(abs, full)));
    }
  };
  await walk(abs);
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A parsed manifest: per file, the raw patient id and other columns. */
export type Manifest = Map<string, { patientId: string | null; tags: Record<string, string> }>;

/**
 * Read a CSV manifest with a `file` column and a patient column (default `patient_id`).
 * Other columns are kept as tags. Duplicate rows for one file are counted in `skipped`.
 * @throws FedsslError DATA_SOURCE_INVALID when the file or a required column is missing.
 */
export async function readManifest(
  path: string,
  patientColumn = 'patient_id',
  skipped?: SkipCounter,
): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new FedsslError('DATA_SOURCE_INVALID', `manifest not found or not readable: ${path}`);
  }
  const table = parseCsvTable(text);
  for (const col of ['file', patientColumn]) {
    if (!table.header.includes(col)) {
      throw new FedsslError(
        'DATA_SOURCE_INVALID',
        `manifest has no "${col}" column (columns: ${table.header.join(', ')})`,
        { missingColumn: col },
      );
    }
  }
  const manifest: Manifest = new Map();
  for (const rec of table.records) {
    const file = normalizeManifestPath(rec.file ?? '');
    if (file === '') continue;
    if (manifest.has(file)) {
      skipped?.add('duplicate-manifest-row');
      continue;
    }
    const rawId = (rec[patientColumn] ?? '').trim();
    const tags: Record<string, string> = {};
    for (const [k, v] of Object.entries(rec)) if (k !== 'file' && k !== patientColumn) tags[k] = v;
    manifest.set(file, { patientId: rawId === '' ? null : rawId, tags });
  }
  return manifest;
}

/** Options of {@link scanFolder}. */
export interface ScanFolderOptions {
  root: string;
  /** Manifest path; when absent, `manifest.csv` in `root` is used if it exists. */
  manifest?: string;
  patientColumn?: string;
  logger?: Logger;
}

/** The images of a folder source, before decoding. */
export interface ScanResult {
  images: SourceImage[];
  skipped: SkipCounter;
  /** The manifest that was used, if any. */
  manifestPath: string | null;
}

/**
 * List the images of a folder and join them with the manifest. With a manifest, only
 * files it lists are used (others count as `not-in-manifest`); without one, every image
 * is used and none has a patient id.
 */
export async function scanFolder(opts: ScanFolderOptions): Promise<ScanResult> {
  const root = resolve(opts.root);
  const files = await listImageFiles(root);
  const skipped = new SkipCounter();
  let manifestPath: string | null = opts.manifest ? resolve(opts.manifest) : null;
  if (manifestPath === null) {
    const beside = join(root, 'manifest.csv');
    try {
      if ((await stat(beside)).isFile()) manifestPath = beside;
    } catch {
      // No manifest beside the images: plain folder.
    }
  }
  if (manifestPath === null) {
    return { images: files.map((file) => ({ file, patientId: null, tags: {} })), skipped, manifestPath };
  }
  const manifest = await readManifest(manifestPath, opts.patientColumn ?? 'patient_id', skipped);
  const images: SourceImage[] = [];
  const present = new Set(files);
  for (const file of files) {
    const m = manifest.get(file);
    if (!m) {
      skipped.add('not-in-manifest');
      opts.logger?.debug({ fileTag: pathTag(file), reason: 'not-in-manifest' }, 'image skipped');
      continue;
    }
    images.push({ file, patientId: m.patientId, tags: m.tags });
  }
  for (const file of manifest.keys()) {
    if (!present.has(file)) {
      skipped.add('missing-file');
      opts.logger?.debug({ fileTag: pathTag(file), reason: 'missing-file' }, 'manifest row skipped');
    }
  }
  return { images, skipped, manifestPath };
}

/** One decoded image. */
export interface DecodedImage {
  /** `size × size` values in [0, 1], row-major. */
  pixels: Float32Array;
  /** Original dimensions and sample depth, for statistics. */
  originalWidth: number;
  originalHeight: number;
  bitDepth: 8 | 16;
}

/**
 * Decode a PNG/JPEG (path or bytes) to a square grayscale Float32 image in [0, 1].
 *
 * - EXIF orientation is applied; transparency is flattened onto black.
 * - Colour is converted to luminance; 8- and 16-bit inputs are both read through sharp's
 *   16-bit grayscale (`grey16`), so 16-bit scans keep their full precision and 8-bit
 *   values v map exactly to v/255.
 * - Resizing uses fit "cover": the image is scaled to fill the square and the centre is
 *   cropped. Unlike "fill" it never distorts anatomy (aspect ratio kept); what it drops
 *   is a margin of the longer side, where scans usually hold borders and text overlays.
 *
 * @throws whatever sharp throws for unreadable or undecodable input, including "Input image
 *   exceeds pixel limit" for an image claiming more than `maxPixels` pixels.
 */
export async function decodeGrayscale(
  input: string | Buffer,
  size: number,
  maxPixels: number = DEFAULT_LIMITS.maxPixels,
): Promise<DecodedImage> {
  // limitInputPixels: sharp checks the header's claimed size before allocating.
  const image = sharp(input, { failOn: 'error', limitInputPixels: maxPixels });
  const meta = await image.metadata();
  const { data, info } = await image
    .rotate()
    .flatten({ background: '#000000' })
    .toColourspace('grey16')
    .resize(size, size, { fit: 'cover', position: 'centre' })
    .raw({ depth: 'ushort' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 1 || info.width !== size || info.height !== size || data.length !== size * size * 2) {
    // sharp's channel handling has surprised us before (8-bit grey comes out as RGB unless
    // asked otherwise); check instead of trusting.
    throw new Error(
      `unexpected decoder output: ${info.channels} channels, ${info.width}x${info.height}, ${data.length} bytes`,
    );
  }
  // Copy to an aligned buffer: the Buffer may start at an odd offset in a shared pool.
  const aligned = new Uint8Array(data.length);
  aligned.set(data);
  const u16 = new Uint16Array(aligned.buffer);
  const pixels = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) pixels[i] = u16[i]! / 65535;
  const depth = meta.depth === 'ushort' || meta.depth === 'short' ? 16 : 8;
  return { pixels, originalWidth: meta.width ?? 0, originalHeight: meta.height ?? 0, bitDepth: depth };
}

/** Options of {@link FolderSource}. */
export interface FolderSourceOptions {
  root: string;
  /** CSV manifest (default: `manifest.csv` in `root` if present). */
  manifest?: string;
  /** Manifest column with the raw patient id (default `patient_id`). */
  patientColumn?: string;
  /** Manifest column holding a label for the probe. */
  labelColumn?: string;
  pseudonymize: Pseudonymizer;
  limits?: DataLimits;
  logger?: Logger;
}

/**
 * A folder of PNG/JPEG images with an optional CSV manifest, as a {@link DataSource}.
 * Patient ids from the manifest are pseudonymized as the manifest is read.
 */
export class FolderSource implements DataSource {
  readonly kind = 'folder' as const;
  private readonly root: string;
  private readonly limits: DataLimits;
  manifestUsed = false;

  constructor(private readonly opts: FolderSourceOptions) {
    this.root = resolve(opts.root);
    this.limits = opts.limits ?? DEFAULT_LIMITS;
  }

  describe(): string {
    return `folder of PNG/JPEG images at ${this.root}`;
  }

  async list(): Promise<SourceListing> {
    const scan = await scanFolder({
      root: this.root,
      ...(this.opts.manifest !== undefined ? { manifest: this.opts.manifest } : {}),
      ...(this.opts.patientColumn !== undefined ? { patientColumn: this.opts.patientColumn } : {}),
      ...(this.opts.logger ? { logger: this.opts.logger } : {}),
    });
    this.manifestUsed = scan.manifestPath !== null;
    const labelColumn = this.opts.labelColumn;
    const columns = new Set<string>();
    const items: SourceItem[] = scan.images.map((img) => {
      for (const k of Object.keys(img.tags)) columns.add(k);
      const label = labelColumn !== undefined ? (img.tags[labelColumn] ?? '').trim() : '';
      return {
        key: img.file,
        patient: img.patientId === null ? null : this.opts.pseudonymize(img.patientId),
        tags: img.tags,
        label: label === '' ? null : label,
      };
    });
    if (labelColumn !== undefined && this.manifestUsed && !columns.has(labelColumn) && items.length > 0)
      throw new FedsslError(
        'DATA_SOURCE_INVALID',
        `manifest has no "${labelColumn}" column (columns: ${[...columns].join(', ')})`,
      );
    return { items, skipped: scan.skipped, columns: [...columns].sort() };
  }

  async read(item: SourceItem, size: number): Promise<ReadResult> {
    const full = join(this.root, item.key);
    const bytes = await readBoundedFile(full, this.limits.maxBytes);
    if (!Buffer.isBuffer(bytes)) return bytes;
    try {
      const d = await decodeGrayscale(bytes, size, this.limits.maxPixels);
      return {
        ok: true,
        frames: [
          {
            pixels: d.pixels,
            originalWidth: d.originalWidth,
            originalHeight: d.originalHeight,
            bitDepth: d.bitDepth,
          },
        ],
        patient: item.patient,
        tags: item.tags,
        label: item.label,
      };
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      if (/exceeds pixel limit/i.test(msg))
        return skip('too-large', `image exceeds the limit of ${this.limits.maxPixels} pixels`);
      return skip('decode-failed', `not a decodable PNG/JPEG (${msg.split('\n')[0]!.slice(0, 100)})`);
    }
  }
}
