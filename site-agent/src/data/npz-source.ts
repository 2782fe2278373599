import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { unzipSync } from 'fflate';
import { FedsslError } from '@fedssl/shared/errors';
import {
  DEFAULT_LIMITS,
  SkipCounter,
  skip,
  type DataLimits,
  type DataSource,
  type ReadResult,
  type SourceItem,
  type SourceListing,
} from './data-source';
import { squareFromUnit } from './gray-image';

/** A parsed `.npy` array. */
export interface NpyArray {
  dtype: 'u1' | 'u2' | 'f4';
  shape: number[];
  data: Uint8Array | Uint16Array | Float32Array;
}

/**
 * Parse a NumPy `.npy` file (format versions 1–3): magic, header length, a Python dict
 * literal `{'descr': '|u1', 'fortran_order': False, 'shape': (N, H, W), }`, then C-order
 * data. Only the little-endian unsigned 8/16-bit and float32 dtypes MedMNIST-style arrays use.
 * @throws FedsslError DATA_SOURCE_INVALID with what was wrong.
 */
export function parseNpy(bytes: Uint8Array, maxElements = Infinity): NpyArray {
  const bad = (why: string) => new FedsslError('DATA_SOURCE_INVALID', `.npy array: ${why}`);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw bad('no \\x93NUMPY magic');
  const major = bytes[6]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const headerStart = major === 1 ? 10 : 12;
  if (headerStart + headerLen > bytes.length) throw bad('header runs past the end of the file');
  const header = Buffer.from(bytes.subarray(headerStart, headerStart + headerLen)).toString('latin1');
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined)
    throw bad('header lacks descr, fortran_order or shape');
  if (fortran === 'True') throw bad('Fortran-ordered arrays are not supported');
  const shape = shapeText
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw bad(`invalid shape (${shapeText})`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (count > maxElements) throw bad(`shape (${shapeText}) exceeds the limit of ${maxElements} elements`);
  const dtype =
    descr === '|u1' || descr === '<u1' ? 'u1' : descr === '<u2' ? 'u2' : descr === '<f4' ? 'f4' : null;
  if (dtype === null) throw bad(`dtype ${descr} is not supported (uint8, little-endian uint16 or float32)`);
  const bytesPer = dtype === 'u1' ? 1 : dtype === 'u2' ? 2 : 4;
  const start = headerStart + headerLen;
  if (bytes.length - start < count * bytesPer)
    throw bad(`data holds ${bytes.length - start} bytes, shape (${shapeText}) needs ${count * bytesPer}`);
  // Copy: typed arrays need alignment and the zip entry may be shared.
  const raw = bytes.slice(start, start + count * bytesPer);
  const data =
    dtype === 'u1' ? raw : dtype === 'u2' ? new Uint16Array(raw.buffer) : new Float32Array(raw.buffer);
  return { dtype, shape, data };
}

/** Options of {@link NpzSource}. */
export interface NpzSourceOptions {
  path: string;
  /** Which split: `train` (default), `val`, `test`, or `all`. */
  split?: 'train' | 'val' | 'test' | 'all';
  limits?: DataLimits;
}

/**
 * A MedMNIST-style `.npz` (a zip of `.npy` arrays `<split>_images` (N, H, W[, 3]) and
 * `<split>_labels` (N, 1)). No patient ids: each image is its own metadata class; the
 * labels are kept for the probe.
 */
export class NpzSource implements DataSource {
  readonly kind = 'npz' as const;
  private readonly path: string;
  private readonly limits: DataLimits;
  private images: { array: NpyArray; offset: number }[] = [];
  private labels: (number | null)[] = [];
  private h = 0;
  private w = 0;
  private channels = 1;

  constructor(private readonly opts: NpzSourceOptions) {
    this.path = resolve(opts.path);
    this.limits = opts.limits ?? DEFAULT_LIMITS;
  }

  describe(): string {
    return `MedMNIST .npz at ${this.path} (split ${this.opts.split ?? 'train'})`;
  }

  async list(): Promise<SourceListing> {
    let bytes: Buffer;
    try {
      const st = await stat(this.path);
      if (st.size > this.limits.maxBytes)
        throw new FedsslError(
          'DATA_SOURCE_INVALID',
          `.npz of ${st.size} bytes exceeds the limit of ${this.limits.maxBytes}`,
        );
      bytes = await readFile(this.path);
    } catch (e) {
      if (e instanceof FedsslError) throw e;
      throw new FedsslError('DATA_SOURCE_INVALID', `.npz not found or not readable: ${this.path}`);
    }
    const split = this.opts.split ?? 'train';
    const splits = split === 'all' ? ['train', 'val', 'test'] : [split];
    const wanted = new Set(splits.flatMap((s) => [`${s}_images.npy`, `${s}_labels.npy`]));
    let entries: Record<string, Uint8Array>;
    try {
      // The filter sees each entry's declared size before inflating it.
      entries = unzipSync(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
        filter: (f) => {
          if (!wanted.has(f.name)) return false;
          if (f.originalSize > this.limits.maxBytes)
            throw new FedsslError(
              'DATA_SOURCE_INVALID',
              `${f.name} inflates to ${f.originalSize} bytes, over the limit`,
            );
          return true;
        },
      });
    } catch (e) {
      if (e instanceof FedsslError) throw e;
      throw new FedsslError('DATA_SOURCE_INVALID', `not a readable .npz (zip) file: ${(e as Error).message}`);
    }
    const items: SourceItem[] = [];
    this.images = [];
    this.labels = [];
    for (const s of splits) {
      const img = entries[`${s}_images.npy`];
      if (!img)
        throw new FedsslError(
          'DATA_SOURCE_INVALID',
          `.npz has no ${s}_images array (splits are train, val, test)`,
        );
      const array = parseNpy(img, this.limits.maxBytes);
      const [n, h, w, c] = array.shape;
      if (
        n === undefined ||
        h === undefined ||
        w === undefined ||
        !(c === undefined || c === 3 || c === 1) ||
        array.shape.length > 4
      )
        throw new FedsslError(
          'DATA_SOURCE_INVALID',
          `${s}_images has shape (${array.shape.join(', ')}), expected (N, H, W[, 3])`,
        );
      if (h * w > this.limits.maxPixels)
        throw new FedsslError('DATA_SOURCE_INVALID', `${s}_images are ${w} × ${h}, over the pixel limit`);
      if (this.h !== 0 && (this.h !== h || this.w !== w))
        throw new FedsslError('DATA_SOURCE_INVALID', 'splits have different image sizes');
      this.h = h;
      this.w = w;
      this.channels = c ?? 1;
      const lab = entries[`${s}_labels.npy`];
      const labels = lab ? parseNpy(lab, this.limits.maxBytes) : null;
      const per = labels ? labels.data.length / Math.max(1, labels.shape[0] ?? 1) : 0;
      for (let i = 0; i < n; i++) {
        this.images.push({ array, offset: i * h * w * this.channels });
        const l = labels && i < (labels.shape[0] ?? 0) ? Number(labels.data[i * per]) : null;
        this.labels.push(l);
        const idx = items.length;
        items.push({
          key: String(idx),
          patient: null,
          tags: { split: s },
          label: l === null ? null : String(l),
        });
      }
    }
    return { items, skipped: new SkipCounter(), columns: ['split'] };
  }

  async read(item: SourceItem, size: number): Promise<ReadResult> {
    const rec = this.images[Number(item.key)];
    if (!rec) return skip('invalid-header', 'no such array index');
    const { array, offset } = rec;
    const n = this.h * this.w;
    const max = array.dtype === 'u1' ? 255 : array.dtype === 'u2' ? 65535 : 1;
    const unit = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v =
        this.channels === 3
          ? 0.299 * array.data[offset + 3 * i]! +
            0.587 * array.data[offset + 3 * i + 1]! +
            0.114 * array.data[offset + 3 * i + 2]!
          : array.data[offset + i]!;
      unit[i] = v / max;
    }
    return {
      ok: true,
      frames: [
        {
          pixels: await squareFromUnit(unit, this.w, this.h, size),
          originalWidth: this.w,
          originalHeight: this.h,
          bitDepth: array.dtype === 'u1' ? 8 : array.dtype === 'u2' ? 16 : 32,
        },
      ],
      patient: null,
      tags: item.tags,
      label: item.label,
    };
  }
}
