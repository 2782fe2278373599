import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';

/**
 * The one interface every kind of hospital data is read through (folder of PNG/JPEG,
 * DICOM folder, DICOMweb, MedMNIST .npz): list the items, read one item into zero or more
 * decoded grayscale frames, with its (already pseudonymized) metadata.
 *
 * Identifiers never cross this interface in the clear: a source pseudonymizes patient and
 * study identifiers with the site's HMAC as it reads them. Item keys (file paths, instance
 * UIDs) are opaque handles for the source and are only ever logged as {@link pathTag}s.
 */

/** Why an item (or a manifest row) was left out. Stable strings: they appear in reports. */
export type SkipReason =
  /** The file could not be opened (permissions, I/O error). */
  | 'unreadable'
  /** The bytes are not a decodable image (PNG/JPEG decode error, corrupt codestream). */
  | 'decode-failed'
  /** A manifest is used and does not list this file. */
  | 'not-in-manifest'
  /** The manifest lists a file that is not in the folder. */
  | 'missing-file'
  /** The manifest lists the same file twice (later rows ignored). */
  | 'duplicate-manifest-row'
  /** The file ends before its declared content does. */
  | 'truncated'
  /** Not a DICOM file, or its header cannot be parsed. */
  | 'not-dicom'
  /** A DICOM object without pixel data (RT plan, structured report, …). */
  | 'no-pixel-data'
  /** A transfer syntax no installed decoder handles. */
  | 'unsupported-syntax'
  /** Pixel layout not supported (1-bit segmentation, 32-bit, palette colour, …). */
  | 'unsupported-pixel-format'
  /** A header value is missing or invalid (rows, frames, bits). */
  | 'invalid-header'
  /** The image claims more pixels, frames or bytes than the configured limits allow. */
  | 'too-large'
  /** A network fetch (DICOMweb) failed. */
  | 'fetch-failed';

/** Limits against hostile or absurd inputs, checked before any pixel buffer is allocated. */
export interface DataLimits {
  /** Largest width × height of one frame. */
  maxPixels: number;
  /** Most frames in one object. */
  maxFrames: number;
  /** Largest file or downloaded object, in bytes. */
  maxBytes: number;
}

/** Defaults: a 10k × 10k frame (large mammograms are ~4k × 5k), 2000 frames, 1 GiB. */
export const DEFAULT_LIMITS: Readonly<DataLimits> = Object.freeze({
  maxPixels: 10_000 * 10_000,
  maxFrames: 2000,
  maxBytes: 1024 * 1024 * 1024,
});

/** One listed item, before decoding. */
export interface SourceItem {
  /** Opaque handle for the source (relative path, instance URL, array index). Never logged raw. */
  key: string;
  /** Patient pseudonym (HMAC hex) when known at list time, else null. */
  patient: string | null;
  /** Categorical metadata known at list time (manifest columns). No identifiers. */
  tags: Record<string, string>;
  /** Label for the probe when the source has one (manifest column, .npz labels). */
  label: string | null;
}

/** One decoded frame, resized to the working size. */
export interface DecodedFrame {
  /** `size × size` values in [0, 1], row-major. */
  pixels: Float32Array;
  originalWidth: number;
  originalHeight: number;
  /** Bits per sample of the stored image (8, 16, 12 for DICOM with 12 bits stored, …). */
  bitDepth: number;
}

/** The result of reading one item: frames with metadata, or one reason to skip it. */
export type ReadResult =
  | {
      ok: true;
      frames: DecodedFrame[];
      /** Patient pseudonym (HMAC hex) or null when the item names no patient. */
      patient: string | null;
      /** Categorical metadata (manifest columns, DICOM tags); identifiers pseudonymized. */
      tags: Record<string, string>;
      label: string | null;
    }
  | {
      ok: false;
      reason: SkipReason;
      /** What was wrong, for people: no paths, no identifiers. */
      detail: string;
    };

/** What a source found when listing. */
export interface SourceListing {
  items: SourceItem[];
  /** Items or rows left out already at list time. */
  skipped: SkipCounter;
  /** Metadata columns or tags this source can provide. */
  columns: string[];
}

/** A readable collection of images. */
export interface DataSource {
  readonly kind: 'folder' | 'dicom' | 'dicomweb' | 'npz';
  /** A description safe to log and print (no patient paths): kind and root or URL. */
  describe(): string;
  list(): Promise<SourceListing>;
  /** Decode one item to `size × size` frames. Never throws for a bad item: it returns a skip. */
  read(item: SourceItem, size: number): Promise<ReadResult>;
}

/** Turns a raw identifier into the site's pseudonym (HMAC under the site secret). */
export type Pseudonymizer = (raw: string) => string;

/** A skip result. */
export function skip(reason: SkipReason, detail: string): ReadResult {
  return { ok: false, reason, detail };
}

/** Short, non-reversible tag of a path for debug logs. */
export function pathTag(path: string): string {
  return createHash('sha256').update(path).digest('hex').slice(0, 12);
}

/** A counter of skip reasons, with the distinct details seen for each. */
export class SkipCounter {
  private readonly counts = new Map<SkipReason, number>();
  private readonly details = new Map<string, { reason: SkipReason; detail: string; count: number }>();

  add(reason: SkipReason, n = 1, detail?: string): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + n);
    if (detail !== undefined) {
      const k = `${reason}\u0000${detail}`;
      const d = this.details.get(k) ?? { reason, detail, count: 0 };
      d.count += n;
      this.details.set(k, d);
    }
  }

  /** `[{reason, count}]` sorted by reason, for reports. */
  toList(): { reason: SkipReason; count: number }[] {
    return [...this.counts.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([reason, count]) => ({ reason, count }));
  }

  /** `[{reason, detail, count}]` sorted by reason then detail. */
  detailList(): { reason: SkipReason; detail: string; count: number }[] {
    return [...this.details.values()].sort((a, b) =>
      a.reason !== b.reason ? (a.reason < b.reason ? -1 : 1) : a.detail < b.detail ? -1 : 1,
    );
  }

  get total(): number {
    let t = 0;
    for (const c of this.counts.values()) t += c;
    return t;
  }
}

/**
 * Reads one file of a source, refusing it before reading when it is larger than `maxBytes`.
 * Returns the bytes, or the skip that says why the file could not be used.
 */
export async function readBoundedFile(path: string, maxBytes: number): Promise<Buffer | ReadResult> {
  try {
    const st = await stat(path);
    if (st.size > maxBytes)
      return skip('too-large', `file of ${st.size} bytes exceeds the limit of ${maxBytes}`);
    return await readFile(path);
  } catch (e) {
    return skip('unreadable', `cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'I/O error'})`);
  }
}
