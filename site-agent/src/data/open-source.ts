import { readdir, stat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import type { DataLimits, DataSource, Pseudonymizer } from './data-source';
import { DicomFolderSource, isDicomName } from './dicom-source';
import { DicomWebSource } from './dicomweb-source';
import { FolderSource, IMAGE_EXTENSIONS } from './folder-source';
import { NpzSource } from './npz-source';

/** The kinds of data a site can point the agent at. */
export type DataFormat = 'folder' | 'dicom' | 'npz' | 'dicomweb';

/** Options of {@link openDataSource}. */
export interface OpenDataSourceOptions {
  /** A folder, an `.npz` file, or an http(s) DICOMweb root. */
  path: string;
  /** Force a format instead of detecting it. */
  format?: DataFormat;
  manifest?: string;
  patientColumn?: string;
  labelColumn?: string;
  /** `.npz` split (default train). */
  split?: 'train' | 'val' | 'test' | 'all';
  /** Extra HTTP headers for DICOMweb (e.g. Authorization). */
  headers?: Record<string, string>;
  pseudonymize: Pseudonymizer;
  limits?: DataLimits;
  logger?: Logger;
}

/**
 * Which kind of data `path` is: an http(s) URL is DICOMweb; a file ending `.npz` is
 * MedMNIST; a folder holding PNG/JPEG images is an image folder; a folder holding only
 * DICOM-looking files (`.dcm`, `.dicom`, `.ima` or no extension) is a DICOM folder.
 * @throws FedsslError DATA_SOURCE_INVALID when the path is missing, or a folder mixes both.
 */
export async function detectFormat(path: string): Promise<DataFormat> {
  if (/^https?:\/\//i.test(path)) return 'dicomweb';
  const abs = resolve(path);
  let st;
  try {
    st = await stat(abs);
  } catch {
    throw new FedsslError('DATA_SOURCE_INVALID', `data path not found or not readable: ${abs}`);
  }
  if (st.isFile()) {
    if (extname(abs).toLowerCase() === '.npz') return 'npz';
    throw new FedsslError(
      'DATA_SOURCE_INVALID',
      `data path is a file but not an .npz: ${abs} (expected a folder, an .npz or a DICOMweb URL)`,
    );
  }
  let images = 0;
  let dcmNamed = 0; // .dcm, .dicom, .ima
  let bare = 0; // no extension: DICOM in PACS exports, but also READMEs and notes
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory()) await walk(join(dir, e.name));
      else if (IMAGE_EXTENSIONS.some((x) => e.name.toLowerCase().endsWith(x))) images++;
      else if (isDicomName(e.name)) {
        if (extname(e.name) === '') bare++;
        else dcmNamed++;
      }
    }
  };
  await walk(abs);
  if (images > 0 && dcmNamed > 0)
    throw new FedsslError(
      'DATA_SOURCE_INVALID',
      `the data folder holds both PNG/JPEG images (${images}) and DICOM files (${dcmNamed}); point --data at one kind or pass --format`,
    );
  return images === 0 && dcmNamed + bare > 0 ? 'dicom' : 'folder';
}

/** Open the data source for `path` (see {@link detectFormat}). */
export async function openDataSource(opts: OpenDataSourceOptions): Promise<DataSource> {
  const format = opts.format ?? (await detectFormat(opts.path));
  const limits = opts.limits ? { limits: opts.limits } : {};
  switch (format) {
    case 'dicomweb':
      return new DicomWebSource({
        url: opts.path,
        pseudonymize: opts.pseudonymize,
        ...limits,
        ...(opts.headers ? { headers: opts.headers } : {}),
      });
    case 'npz':
      return new NpzSource({ path: opts.path, ...limits, ...(opts.split ? { split: opts.split } : {}) });
    case 'dicom':
      return new DicomFolderSource({ root: opts.path, pseudonymize: opts.pseudonymize, ...limits });
    case 'folder':
      return new FolderSource({
        root: opts.path,
        pseudonymize: opts.pseudonymize,
        ...limits,
        ...(opts.manifest !== undefined ? { manifest: opts.manifest } : {}),
        ...(opts.patientColumn !== undefined ? { patientColumn: opts.patientColumn } : {}),
        ...(opts.labelColumn !== undefined ? { labelColumn: opts.labelColumn } : {}),
        ...(opts.logger ? { logger: opts.logger } : {}),
      });
  }
}
