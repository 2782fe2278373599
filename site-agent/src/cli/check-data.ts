import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { DataLimits } from '../data/data-source';
import { loadTrainingDataset, type DatasetReport } from '../data/load-dataset';
import type { DataFormat } from '../data/open-source';
import type { CliIo } from './commands';

/** Options of {@link checkDataCommand}. */
export interface CheckDataOptions {
  /** Folder, `.npz`, or DICOMweb URL. */
  data: string;
  format?: DataFormat;
  manifest?: string;
  patientColumn?: string;
  metadataColumn?: string;
  labelColumn?: string;
  split?: 'train' | 'val' | 'test' | 'all';
  imageSize?: number;
  limits?: DataLimits;
  json?: boolean;
  logger?: Logger;
}

/**
 * `fedssl-agent check-data`: read the data exactly as training would and report what was
 * found — counts of images, patients, readable and unreadable items with reasons, sizes,
 * intensities, metadata columns. Patients are counted, never named (a throwaway secret
 * pseudonymizes them); nothing is written and nothing is sent anywhere (a DICOMweb source
 * is only read from).
 */
export async function checkDataCommand(opts: CheckDataOptions, io: CliIo): Promise<number> {
  const secret = new Uint8Array(randomBytes(32));
  const { report } = await loadTrainingDataset({
    path: opts.data,
    imageSize: opts.imageSize ?? 64,
    secret,
    ...(opts.format !== undefined ? { format: opts.format } : {}),
    ...(opts.manifest !== undefined ? { manifest: opts.manifest } : {}),
    ...(opts.patientColumn !== undefined ? { patientColumn: opts.patientColumn } : {}),
    ...(opts.metadataColumn !== undefined ? { metadataColumn: opts.metadataColumn } : {}),
    ...(opts.labelColumn !== undefined ? { labelColumn: opts.labelColumn } : {}),
    ...(opts.split !== undefined ? { split: opts.split } : {}),
    ...(opts.limits !== undefined ? { limits: opts.limits } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  secret.fill(0);
  io.out(opts.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return 0;
}

const SOURCE_NAMES: Record<DataFormat, string> = {
  folder: 'folder of PNG/JPEG images',
  dicom: 'folder of DICOM files',
  dicomweb: 'DICOMweb server',
  npz: 'MedMNIST .npz',
};

/** Human form of a dataset report: one fact per line, labels padded to one column. */
export function formatReport(r: DatasetReport): string {
  const row = (label: string, value: string) => `${`${label}:`.padEnd(19)}${value}`;
  const unreadable = r.items - r.readableItems;
  const lines = [
    row(
      'Source',
      `${SOURCE_NAMES[r.source]}${r.source === 'folder' && r.manifestUsed ? ' with manifest' : ''}`,
    ),
    row('Items', `${r.items} (${r.readableItems} readable, ${unreadable} unreadable)`),
    row('Images', String(r.images)),
    row(
      'Patients',
      `${r.patients}${r.patients === 0 && r.unidentifiedImages > 0 ? ' (no patient ids: every image is its own class)' : ''}`,
    ),
    row('Without patient', String(r.unidentifiedImages)),
    row('Metadata classes', String(r.metadataClasses)),
    row(
      'Original sizes',
      `${r.sizes.minWidth}–${r.sizes.maxWidth} × ${r.sizes.minHeight}–${r.sizes.maxHeight} px; bit depths ${Object.entries(
        r.sizes.bitDepths,
      )
        .map(([d, n]) => `${d}-bit: ${n}`)
        .join(', ')}`,
    ),
    row(
      'Intensity',
      `mean ${r.intensity.mean.toFixed(3)}, std ${r.intensity.std.toFixed(3)}, range ${r.intensity.min.toFixed(3)}–${r.intensity.max.toFixed(3)} (after windowing, in [0, 1]); ${r.intensity.blankImages} blank image(s)`,
    ),
    row('Working size', `${r.imageSize} × ${r.imageSize}`),
  ];
  const cols = Object.entries(r.columns);
  if (cols.length === 0) lines.push(row('Columns/tags', 'none'));
  else {
    lines.push(row('Columns/tags', ''));
    for (const [name, c] of cols) {
      const values = c.values
        ? `: ${Object.entries(c.values)
            .map(([v, n]) => `${v} ${n}`)
            .join(', ')}`
        : '';
      lines.push(`  ${name.padEnd(17)}${c.present} with a value, ${c.distinct} distinct${values}`);
    }
  }
  if (r.labels)
    lines.push(
      row(
        'Labels',
        Object.entries(r.labels)
          .map(([l, n]) => `${l} ${n}`)
          .join(', '),
      ),
    );
  if (r.skipped.length === 0) lines.push(row('Skipped', 'none'));
  else {
    lines.push(row('Skipped', r.skipped.map((s) => `${s.reason} ${s.count}`).join(', ')));
    for (const d of r.skippedDetails)
      lines.push(`  ${d.reason.padEnd(26)}${String(d.count).padStart(5)}  ${d.detail}`);
  }
  return lines.join('\n');
}
