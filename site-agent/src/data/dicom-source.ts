import { readdir, stat } from 'node:fs/promises';
import { extname, join, relative, resolve, sep } from 'node:path';
import { FedsslError } from '@fedssl/shared/errors';
import {
  DEFAULT_LIMITS,
  SkipCounter,
  skip,
  type DataLimits,
  type DataSource,
  type Pseudonymizer,
  type ReadResult,
  type SourceItem,
  type SourceListing,
  readBoundedFile,
} from './data-source';
import { decodeDicom, type DicomDecodeResult, type DicomMeta } from './dicom-decode';
import { squareFromUnit } from './gray-image';

/** Extensions taken as DICOM; files without an extension (common in PACS exports) too. */
export const DICOM_EXTENSIONS: readonly string[] = ['.dcm', '.dicom', '.ima'];

/** The DICOM tags kept as metadata columns (identifiers pseudonymized). */
export const DICOM_TAG_COLUMNS: readonly string[] = [
  'Modality',
  'BodyPartExamined',
  'Manufacturer',
  'StudyInstanceUID',
];

/** True for a name the DICOM folder source reads. */
export function isDicomName(name: string): boolean {
  const ext = extname(name).toLowerCase();
  return ext === '' || DICOM_EXTENSIONS.includes(ext);
}

/**
 * DICOM files under `root` (recursive, hidden entries skipped, symlinked folders not
 * followed), relative with `/`, sorted.
 */
export async function listDicomFiles(root: string): Promise<string[]> {
  const abs = resolve(root);
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const full = join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if ((e.isFile() || e.isSymbolicLink()) && isDicomName(e.name))
        out.push(relative(abs, full).split(sep).join('/'));
    }
  };
  try {
    if (!(await stat(abs)).isDirectory()) throw new Error('not a folder');
  } catch {
    throw new FedsslError('DATA_SOURCE_INVALID', `DICOM folder not found or not a folder: ${abs}`);
  }
  await walk(abs);
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Turn a decoded DICOM object into a read result: frames resized to the working size,
 * PatientID and StudyInstanceUID pseudonymized here, at read time.
 */
export async function dicomReadResult(
  decoded: DicomDecodeResult,
  size: number,
  pseudonymize: Pseudonymizer,
): Promise<ReadResult> {
  if (!decoded.ok) return skip(decoded.reason, decoded.detail);
  const frames = [];
  for (const f of decoded.frames) {
    frames.push({
      pixels: await squareFromUnit(f, decoded.width, decoded.height, size),
      originalWidth: decoded.width,
      originalHeight: decoded.height,
      bitDepth: decoded.bitsStored,
    });
  }
  return {
    ok: true,
    frames,
    patient: decoded.meta.patientId === null ? null : pseudonymize(decoded.meta.patientId),
    tags: dicomTags(decoded.meta, pseudonymize),
    label: null,
  };
}

/** The metadata columns of one object; absent tags are left out. */
export function dicomTags(meta: DicomMeta, pseudonymize: Pseudonymizer): Record<string, string> {
  const tags: Record<string, string> = {};
  if (meta.modality) tags.Modality = meta.modality;
  if (meta.bodyPartExamined) tags.BodyPartExamined = meta.bodyPartExamined;
  if (meta.manufacturer) tags.Manufacturer = meta.manufacturer;
  if (meta.studyInstanceUid) tags.StudyInstanceUID = pseudonymize(meta.studyInstanceUid);
  return tags;
}

/** Options of {@link DicomFolderSource}. */
export interface DicomFolderSourceOptions {
  root: string;
  pseudonymize: Pseudonymizer;
  limits?: DataLimits;
}

/** A folder of DICOM files; every frame of a multi-frame object is one image. */
export class DicomFolderSource implements DataSource {
  readonly kind = 'dicom' as const;
  private readonly root: string;
  private readonly limits: DataLimits;

  constructor(private readonly opts: DicomFolderSourceOptions) {
    this.root = resolve(opts.root);
    this.limits = opts.limits ?? DEFAULT_LIMITS;
  }

  describe(): string {
    return `folder of DICOM files at ${this.root}`;
  }

  async list(): Promise<SourceListing> {
    const files = await listDicomFiles(this.root);
    return {
      items: files.map((key) => ({ key, patient: null, tags: {}, label: null })),
      skipped: new SkipCounter(),
      columns: [...DICOM_TAG_COLUMNS],
    };
  }

  async read(item: SourceItem, size: number): Promise<ReadResult> {
    const full = join(this.root, item.key);
    const bytes = await readBoundedFile(full, this.limits.maxBytes);
    if (!Buffer.isBuffer(bytes)) return bytes;
    const decoded = await decodeDicom(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      limits: this.limits,
    });
    return dicomReadResult(decoded, size, this.opts.pseudonymize);
  }
}
