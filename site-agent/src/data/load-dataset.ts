import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import type { TrainingDataset } from './dataset';
import { DEFAULT_LIMITS, pathTag, type DataLimits, type DecodedFrame, type SkipReason } from './data-source';
import { FolderSource } from './folder-source';
import { openDataSource, type DataFormat } from './open-source';
import { assignPseudonymClasses, assignTagClasses, pseudonymize } from './pseudonymize';

/** Options of {@link loadTrainingDataset}. */
export interface LoadTrainingDatasetOptions {
  /** Folder of images or DICOM files, an `.npz`, or an http(s) DICOMweb root. */
  path: string;
  /** Force the format instead of detecting it from `path`. */
  format?: DataFormat;
  /** CSV manifest of an image folder (default: `manifest.csv` in `path` if present). */
  manifest?: string;
  /** Manifest column with the raw patient id (default `patient_id`). */
  patientColumn?: string;
  /**
   * Column or tag to use as metadata classes instead of the patient (e.g. `view`, or
   * `Modality` for DICOM); default: the pseudonymized patient.
   */
  metadataColumn?: string;
  /** Manifest column holding a label (for the probe); `.npz` labels are always read. */
  labelColumn?: string;
  /** `.npz` split (default train). */
  split?: 'train' | 'val' | 'test' | 'all';
  /** Extra HTTP headers for DICOMweb. */
  headers?: Record<string, string>;
  /** Side of the square working images. */
  imageSize: number;
  /** The site's pseudonymization secret (HMAC key). */
  secret: Uint8Array;
  /** Limits against oversized inputs (default {@link DEFAULT_LIMITS}). */
  limits?: DataLimits;
  /** Items decoded at once (default 4). */
  concurrency?: number;
  logger?: Logger;
}

/** Counts of one metadata column or tag. */
export interface ColumnSummary {
  /** Images that have a value. */
  present: number;
  distinct: number;
  /** Value counts, only for non-identifying DICOM tags with few values (Modality, …). */
  values?: Record<string, number>;
}

/** What was loaded; counts only (no ids, no paths). */
export interface DatasetReport {
  /** What kind of source was read. */
  source: DataFormat;
  /** Items (files, instances, array entries) listed. */
  items: number;
  /** Items that gave at least one image. */
  readableItems: number;
  /** Images loaded (a multi-frame object gives one per frame). */
  images: number;
  /** Distinct identified patients. */
  patients: number;
  /** Images without a patient id (each is its own metadata class). */
  unidentifiedImages: number;
  metadataClasses: number;
  /** Items left out, by reason. */
  skipped: { reason: SkipReason; count: number }[];
  /** Items left out, by reason and detail (no paths, no identifiers). */
  skippedDetails: { reason: SkipReason; detail: string; count: number }[];
  /** Original image sizes and sample depths. */
  sizes: {
    minWidth: number;
    maxWidth: number;
    minHeight: number;
    maxHeight: number;
    bitDepths: Record<string, number>;
  };
  /** Statistics of the working pixels in [0, 1] (after window, before augmentation). */
  intensity: { mean: number; std: number; min: number; max: number; blankImages: number };
  /** Metadata columns (manifest) or tags (DICOM) found, with counts. */
  columns: Record<string, ColumnSummary>;
  /** Label counts when a label column is used or the source has labels. */
  labels: Record<string, number> | null;
  imageSize: number;
  manifestUsed: boolean;
}

/** Per image, what the probe and other consumers may use beside the pixels. */
export interface ImageInfo {
  /** Site-local patient class (pseudonym order), images without patient after the patients. */
  patientClass: number;
  label: string | null;
  tags: Record<string, string>;
}

/** Tags whose values are shown in reports (categorical, not identifying). */
const SHOWN_VALUES = new Set(['Modality', 'BodyPartExamined', 'Manufacturer', 'split']);

/**
 * Read any data source into a {@link TrainingDataset}: detect the kind of data from
 * `path`, list, decode, grayscale, resize, scale to [0, 1], and turn patient ids into
 * site-local class indices. Sources pseudonymize identifiers (HMAC under the site
 * secret) as they read them, so raw ids never leave the source. Unreadable items are
 * skipped and counted with one reason each, never fatal.
 * @throws FedsslError DATA_SOURCE_INVALID for a bad path/manifest, DATA_EMPTY when no image loads.
 */
export async function loadTrainingDataset(
  opts: LoadTrainingDatasetOptions,
): Promise<{ dataset: TrainingDataset; report: DatasetReport; images: ImageInfo[] }> {
  const size = opts.imageSize;
  if (!Number.isInteger(size) || size < 1)
    throw new FedsslError('DATA_SOURCE_INVALID', `imageSize must be a positive integer, got ${size}`);
  const secret = opts.secret;
  pseudonymize(secret, 'check'); // refuses a short secret up front
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const source = await openDataSource({
    path: opts.path,
    pseudonymize: (raw) => pseudonymize(secret, raw),
    limits,
    ...(opts.format ? { format: opts.format } : {}),
    ...(opts.manifest !== undefined ? { manifest: opts.manifest } : {}),
    ...(opts.patientColumn !== undefined ? { patientColumn: opts.patientColumn } : {}),
    ...(opts.labelColumn !== undefined ? { labelColumn: opts.labelColumn } : {}),
    ...(opts.split ? { split: opts.split } : {}),
    ...(opts.headers ? { headers: opts.headers } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  const listing = await source.list();
  const skipped = listing.skipped;
  type Kept = {
    frame: DecodedFrame;
    patient: string | null;
    label: string | null;
    tags: Record<string, string>;
  };
  const perItem: Kept[][] = new Array(listing.items.length);

  // A small pool: decoding is CPU-bound (libvips threads, wasm codecs); more in flight only costs memory.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < listing.items.length) {
      const k = next++;
      const item = listing.items[k]!;
      const r = await source.read(item, size);
      if (!r.ok) {
        skipped.add(r.reason, 1, r.detail);
        opts.logger?.debug({ fileTag: pathTag(item.key), reason: r.reason }, 'item skipped');
        perItem[k] = [];
        continue;
      }
      perItem[k] = r.frames.map((frame) => ({ frame, patient: r.patient, label: r.label, tags: r.tags }));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 4) }, () => worker()));

  const kept = perItem.flat();
  if (kept.length === 0) {
    throw new FedsslError(
      'DATA_EMPTY',
      `no usable images in ${source.describe()} (${listing.items.length} items, ${skipped.total} skipped: ${
        skipped
          .toList()
          .map((s) => `${s.reason} ${s.count}`)
          .join(', ') || 'none found'
      })`,
      { skipped: skipped.toList() },
    );
  }

  const area = size * size;
  const pixels = new Float32Array(kept.length * area);
  kept.forEach((x, i) => pixels.set(x.frame.pixels, i * area));
  const patients = assignPseudonymClasses(kept.map((x) => x.patient));
  let labels = patients.labels;
  let classes = patients.classes;
  if (opts.metadataColumn !== undefined && opts.metadataColumn !== (opts.patientColumn ?? 'patient_id')) {
    const col = opts.metadataColumn;
    const tag = assignTagClasses(kept.map((x) => x.tags[col]));
    labels = tag.labels;
    classes = tag.classes;
  }

  const report: DatasetReport = {
    source: source.kind,
    items: listing.items.length,
    readableItems: perItem.filter((x) => x.length > 0).length,
    images: kept.length,
    patients: patients.patients,
    unidentifiedImages: patients.unidentified,
    metadataClasses: classes,
    skipped: skipped.toList(),
    skippedDetails: skipped.detailList(),
    sizes: sizeStats(kept.map((x) => x.frame)),
    intensity: intensityStats(pixels, kept.length, area),
    columns: columnStats(
      kept.map((x) => x.tags),
      listing.columns,
    ),
    labels: labelCounts(kept.map((x) => x.label)),
    imageSize: size,
    manifestUsed: source instanceof FolderSource && source.manifestUsed,
  };
  opts.logger?.info(
    {
      source: report.source,
      images: report.images,
      patients: report.patients,
      metadataClasses: classes,
      skipped: report.skipped,
      imageSize: size,
    },
    'training data loaded',
  );
  const dataset: TrainingDataset = {
    count: kept.length,
    height: size,
    width: size,
    pixels,
    metadataLabels: labels,
    metadataClasses: classes,
  };
  const images = kept.map((x, i) => ({ patientClass: patients.labels[i]!, label: x.label, tags: x.tags }));
  return { dataset, report, images };
}

function sizeStats(frames: DecodedFrame[]): DatasetReport['sizes'] {
  const bitDepths: Record<string, number> = {};
  for (const f of frames) bitDepths[String(f.bitDepth)] = (bitDepths[String(f.bitDepth)] ?? 0) + 1;
  // reduce, not Math.min(...xs): spreading 10⁵+ arguments overflows the stack.
  return {
    minWidth: frames.reduce((m, f) => Math.min(m, f.originalWidth), Infinity),
    maxWidth: frames.reduce((m, f) => Math.max(m, f.originalWidth), 0),
    minHeight: frames.reduce((m, f) => Math.min(m, f.originalHeight), Infinity),
    maxHeight: frames.reduce((m, f) => Math.max(m, f.originalHeight), 0),
    bitDepths,
  };
}

/** Mean, standard deviation, range, and images with (almost) no contrast. */
function intensityStats(pixels: Float32Array, count: number, area: number): DatasetReport['intensity'] {
  let sum = 0;
  let sq = 0;
  let min = Infinity;
  let max = -Infinity;
  let blank = 0;
  for (let k = 0; k < count; k++) {
    let s = 0;
    let s2 = 0;
    for (let i = k * area; i < (k + 1) * area; i++) {
      const v = pixels[i]!;
      s += v;
      s2 += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const m = s / area;
    if (s2 / area - m * m < 1e-6) blank++;
    sum += s;
    sq += s2;
  }
  const n = count * area;
  const mean = sum / n;
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    mean: round(mean),
    std: round(Math.sqrt(Math.max(0, sq / n - mean * mean))),
    min: round(min),
    max: round(max),
    blankImages: blank,
  };
}

function columnStats(tags: Record<string, string>[], columns: string[]): Record<string, ColumnSummary> {
  const out: Record<string, ColumnSummary> = {};
  for (const c of columns) {
    const counts = new Map<string, number>();
    let present = 0;
    for (const t of tags) {
      const v = t[c]?.trim();
      if (v === undefined || v === '') continue;
      present++;
      counts.set(v, (counts.get(v) ?? 0) + 1);
    }
    const summary: ColumnSummary = { present, distinct: counts.size };
    if (SHOWN_VALUES.has(c) && counts.size <= 20)
      summary.values = Object.fromEntries([...counts.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
    out[c] = summary;
  }
  return out;
}

function labelCounts(labels: (string | null)[]): Record<string, number> | null {
  if (labels.every((l) => l === null)) return null;
  const counts: Record<string, number> = {};
  for (const l of labels) {
    const k = l ?? '(none)';
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)));
}
