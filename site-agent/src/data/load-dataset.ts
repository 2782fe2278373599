import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import type { TrainingDataset } from './dataset';
import type { SkipCounter } from './folder-source';
import { decodeGrayscale, pathTag, scanFolder, type SkipReason } from './folder-source';
import { assignPatientClasses, assignTagClasses } from './pseudonymize';

/** Options of {@link loadTrainingDataset}. */
export interface LoadTrainingDatasetOptions {
  /** Folder of images. */
  path: string;
  /** CSV manifest (default: `manifest.csv` in `path` if present). */
  manifest?: string;
  /** Manifest column with the raw patient id (default `patient_id`). */
  patientColumn?: string;
  /**
   * Manifest column to use as metadata classes instead of the patient (e.g. `view`);
   * default: the pseudonymized patient.
   */
  metadataColumn?: string;
  /** Side of the square working images. */
  imageSize: number;
  /** The site's pseudonymization secret (HMAC key). */
  secret: Uint8Array;
  /** Images decoded at once (default 4). */
  concurrency?: number;
  logger?: Logger;
}

/** What was loaded; counts only (no ids, no paths). */
export interface DatasetReport {
  images: number;
  /** Distinct identified patients. */
  patients: number;
  /** Images without a patient id (each is its own metadata class). */
  unidentifiedImages: number;
  metadataClasses: number;
  skipped: { reason: SkipReason; count: number }[];
  /** Original image sizes and sample depths. */
  sizes: {
    minWidth: number;
    maxWidth: number;
    minHeight: number;
    maxHeight: number;
    bitDepths: Record<string, number>;
  };
  imageSize: number;
  manifestUsed: boolean;
}

/**
 * Read a folder source into a {@link TrainingDataset}: list, decode, grayscale, resize,
 * scale to [0, 1], and turn patient ids into site-local class indices (via HMAC
 * pseudonyms; raw ids do not leave `pseudonymize.ts`). Unreadable or undecodable files are
 * skipped and counted, never fatal.
 * @throws FedsslError DATA_SOURCE_INVALID for a bad folder/manifest, DATA_EMPTY when no image loads.
 */
export async function loadTrainingDataset(
  opts: LoadTrainingDatasetOptions,
): Promise<{ dataset: TrainingDataset; report: DatasetReport }> {
  const root = resolve(opts.path);
  const size = opts.imageSize;
  if (!Number.isInteger(size) || size < 1)
    throw new FedsslError('DATA_SOURCE_INVALID', `imageSize must be a positive integer, got ${size}`);
  const scan = await scanFolder({
    root,
    ...(opts.manifest !== undefined ? { manifest: opts.manifest } : {}),
    ...(opts.patientColumn !== undefined ? { patientColumn: opts.patientColumn } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  const skipped: SkipCounter = scan.skipped;
  const decoded: ({ pixels: Float32Array; w: number; h: number; depth: number } | null)[] = new Array(
    scan.images.length,
  ).fill(null);

  // A small pool: decoding is CPU-bound in libvips threads, more than a few in flight only costs memory.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < scan.images.length) {
      const k = next++;
      const img = scan.images[k]!;
      const full = join(root, img.file);
      let bytes: Buffer;
      try {
        bytes = await readFile(full);
      } catch (e) {
        skipped.add('unreadable');
        opts.logger?.debug(
          { fileTag: pathTag(img.file), reason: 'unreadable', errno: (e as NodeJS.ErrnoException).code },
          'image skipped',
        );
        continue;
      }
      try {
        const d = await decodeGrayscale(bytes, size);
        decoded[k] = { pixels: d.pixels, w: d.originalWidth, h: d.originalHeight, depth: d.bitDepth };
      } catch {
        skipped.add('decode-failed');
        opts.logger?.debug({ fileTag: pathTag(img.file), reason: 'decode-failed' }, 'image skipped');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 4) }, () => worker()));

  const kept = scan.images
    .map((img, k) => ({ img, d: decoded[k] }))
    .filter(
      (x): x is { img: (typeof scan.images)[number]; d: NonNullable<(typeof decoded)[number]> } =>
        x.d !== null,
    );
  if (kept.length === 0) {
    throw new FedsslError('DATA_EMPTY', `no usable images in the data folder (${skipped.total} skipped)`, {
      skipped: skipped.toList(),
    });
  }

  const pixels = new Float32Array(kept.length * size * size);
  kept.forEach((x, i) => pixels.set(x.d.pixels, i * size * size));
  const patients = assignPatientClasses(
    opts.secret,
    kept.map((x) => x.img.patientId),
  );
  let labels = patients.labels;
  let classes = patients.classes;
  if (opts.metadataColumn !== undefined && opts.metadataColumn !== opts.patientColumn) {
    const col = opts.metadataColumn;
    const tag = assignTagClasses(kept.map((x) => x.img.tags[col]));
    labels = tag.labels;
    classes = tag.classes;
  }

  const bitDepths: Record<string, number> = {};
  for (const x of kept) bitDepths[String(x.d.depth)] = (bitDepths[String(x.d.depth)] ?? 0) + 1;
  const report: DatasetReport = {
    images: kept.length,
    patients: patients.patients,
    unidentifiedImages: patients.unidentified,
    metadataClasses: classes,
    skipped: skipped.toList(),
    // reduce, not Math.min(...xs): spreading 10⁵+ arguments overflows the stack.
    sizes: {
      minWidth: kept.reduce((m, x) => Math.min(m, x.d.w), Infinity),
      maxWidth: kept.reduce((m, x) => Math.max(m, x.d.w), 0),
      minHeight: kept.reduce((m, x) => Math.min(m, x.d.h), Infinity),
      maxHeight: kept.reduce((m, x) => Math.max(m, x.d.h), 0),
      bitDepths,
    },
    imageSize: size,
    manifestUsed: scan.manifestPath !== null,
  };
  opts.logger?.info(
    {
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
  return { dataset, report };
}
