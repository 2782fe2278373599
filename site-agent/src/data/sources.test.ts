import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { zipSync } from 'fflate';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from './data-source';
import { FolderSource } from './folder-source';
import { loadTrainingDataset } from './load-dataset';
import { NpzSource, parseNpy } from './npz-source';
import { detectFormat } from './open-source';
import { pseudonymize } from './pseudonymize';
import { imageHeader, writeDicom } from './testing/dicom-writer';

const DICOM_DIR = resolve(__dirname, '../../../../shared/data/dicom');
const MEDMNIST = resolve(__dirname, '../../../../shared/data/medmnist/breastmnist.npz');
const secret = new Uint8Array(32).fill(5);
let tmp: string;

function captureLogger(): { logger: pino.Logger; text: () => string } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), text: () => lines.join('') };
}

/** A .npy file (v1 header) holding `data` with `shape`. */
function npy(descr: string, shape: number[], data: Uint8Array): Uint8Array {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  while ((10 + header.length + 1) % 64 !== 0) header += ' ';
  header += '\n';
  const h = Buffer.from(header, 'latin1');
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, h.length & 0xff, h.length >> 8]);
  return Buffer.concat([pre, h, Buffer.from(data)]);
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'fedssl-sources-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('DICOM folder through loadTrainingDataset', () => {
  beforeAll(() => {
    if (!existsSync(join(DICOM_DIR, 'MR_small.dcm')))
      throw new Error(
        `real DICOM fixtures missing: expected ${DICOM_DIR} (../shared/data/dicom, see SOURCES.md)`,
      );
  });

  it('reads every readable file, skips the rest with reasons, pseudonymizes PatientID and StudyInstanceUID', async () => {
    const { logger, text } = captureLogger();
    const { dataset, report, images } = await loadTrainingDataset({
      path: DICOM_DIR,
      imageSize: 16,
      secret,
      logger,
    });
    // CT_small, ExplVR_BigEnd, JPEG2000, 6 × MR_small, SC_rgb_small_odd.
    expect(report).toMatchObject({ source: 'dicom', items: 16, images: 10, imageSize: 16 });
    // Patients 1CT1, 4MR1, 8NM1, ID1; ExplVR_BigEnd has no PatientID.
    expect(report.patients).toBe(4);
    expect(report.unidentifiedImages).toBe(1);
    expect(report.skipped).toEqual([
      { reason: 'invalid-header', count: 1 },
      { reason: 'no-pixel-data', count: 1 },
      { reason: 'not-dicom', count: 1 },
      { reason: 'truncated', count: 1 },
      { reason: 'unsupported-pixel-format', count: 1 },
      { reason: 'unsupported-syntax', count: 1 },
    ]);
    expect(report.columns.Modality).toEqual({
      present: 10,
      distinct: 5,
      values: { CT: 1, MR: 6, NM: 1, OT: 1, US: 1 },
    });
    expect(report.columns.StudyInstanceUID!.values).toBeUndefined();
    expect(report.sizes.bitDepths).toEqual({ '8': 2, '16': 8 });
    expect(dataset.pixels.length).toBe(10 * 256);
    // The six MR_small images are one patient.
    const mr = images.filter((i) => i.tags.Modality === 'MR');
    expect(new Set(mr.map((i) => i.patientClass)).size).toBe(1);
    const study = mr[0]!.tags.StudyInstanceUID!;
    expect(study).toBe(pseudonymize(secret, '1.3.6.1.4.1.5962.1.2.4.20040826185059.5457'));
    // Raw identifiers appear nowhere: not in the report, the per-image info, or the logs.
    const out = JSON.stringify(report) + JSON.stringify(images) + text();
    for (const raw of ['1CT1', '4MR1', '8NM1', '1.3.6.1.4.1.5962', DICOM_DIR, 'MR_small'])
      expect(out).not.toContain(raw);
    expect(text()).toContain('"reason":"truncated"');
  });

  it('multi-frame objects give one image per frame, and can use a DICOM tag as metadata classes', async () => {
    const dir = join(tmp, 'multiframe');
    await mkdir(dir);
    const px = new Uint8Array(4 * 3).map((_, i) => i * 10);
    await writeFile(
      join(dir, 'a.dcm'),
      writeDicom({
        elements: imageHeader({ rows: 2, cols: 2, bitsAllocated: 8, frames: 3, patientId: 'X' }),
        pixelData: px,
      }),
    );
    await copyFile(join(DICOM_DIR, 'CT_small.dcm'), join(dir, 'b'));
    expect(await detectFormat(dir)).toBe('dicom');
    const { dataset, report } = await loadTrainingDataset({
      path: dir,
      imageSize: 4,
      secret,
      metadataColumn: 'Modality',
    });
    expect(report.images).toBe(4);
    expect(report.patients).toBe(2);
    expect(Array.from(dataset.metadataLabels)).toEqual([1, 1, 1, 0]); // CT < OT
  });
});

describe('limits against hostile files', () => {
  it('a PNG or DICOM claiming 60000×60000 is skipped as too-large, others still load', async () => {
    const dir = join(tmp, 'hostile');
    await mkdir(dir);
    const png = Buffer.from(
      await sharp(Buffer.alloc(4), { raw: { width: 2, height: 2, channels: 1 } })
        .png()
        .toBuffer(),
    );
    await writeFile(join(dir, 'ok.png'), png);
    const huge = Buffer.from(png);
    huge.writeUInt32BE(60000, 16);
    huge.writeUInt32BE(60000, 20);
    const { crc32 } = await import('node:zlib');
    huge.writeUInt32BE(crc32(huge.subarray(12, 29)) >>> 0, 29);
    await writeFile(join(dir, 'huge.png'), huge);
    const { report } = await loadTrainingDataset({ path: dir, imageSize: 4, secret });
    expect(report.images).toBe(1);
    expect(report.skippedDetails).toEqual([
      {
        reason: 'too-large',
        detail: `image exceeds the limit of ${DEFAULT_LIMITS.maxPixels} pixels`,
        count: 1,
      },
    ]);
    const ddir = join(tmp, 'hostile-dicom');
    await mkdir(ddir);
    await writeFile(
      join(ddir, 'huge.dcm'),
      writeDicom({ elements: imageHeader({ rows: 60000, cols: 60000 }), pixelData: new Uint8Array(2) }),
    );
    await writeFile(
      join(ddir, 'ok.dcm'),
      writeDicom({ elements: imageHeader({ rows: 1, cols: 1 }), pixelData: new Uint8Array(2) }),
    );
    const d = await loadTrainingDataset({ path: ddir, imageSize: 4, secret });
    expect(d.report.images).toBe(1);
    expect(d.report.skipped).toEqual([{ reason: 'too-large', count: 1 }]);
    // A file above the byte limit is not even read.
    const small = await loadTrainingDataset({
      path: ddir,
      imageSize: 4,
      secret,
      limits: { ...DEFAULT_LIMITS, maxBytes: 100 },
    }).catch((e: unknown) => e);
    expect(small).toMatchObject({ code: 'DATA_EMPTY' });
  });
});

describe('folder source labels', () => {
  it('reads a label column for the probe and refuses a missing one', async () => {
    const dir = join(tmp, 'labels');
    await mkdir(dir);
    const png = await sharp(Buffer.alloc(4, 9), { raw: { width: 2, height: 2, channels: 1 } })
      .png()
      .toBuffer();
    await writeFile(join(dir, 'a.png'), png);
    await writeFile(join(dir, 'b.png'), png);
    await writeFile(
      join(dir, 'manifest.csv'),
      'file,patient_id,pathology\na.png,P1,benign\nb.png,P2,malignant\n',
    );
    const r = await loadTrainingDataset({ path: dir, imageSize: 2, secret, labelColumn: 'pathology' });
    expect(r.images.map((i) => i.label)).toEqual(['benign', 'malignant']);
    expect(r.report.labels).toEqual({ benign: 1, malignant: 1 });
    expect(r.report.columns).toEqual({ pathology: { present: 2, distinct: 2 } });
    const src = new FolderSource({ root: dir, labelColumn: 'birads', pseudonymize: (x) => x });
    await expect(src.list()).rejects.toThrow('manifest has no "birads" column (columns: pathology)');
  });
});

describe('MedMNIST .npz', () => {
  it('parses .npy headers and refuses what it cannot read', () => {
    const a = parseNpy(npy('|u1', [2, 3], Uint8Array.from([1, 2, 3, 4, 5, 6])));
    expect(a).toMatchObject({ dtype: 'u1', shape: [2, 3] });
    expect(Array.from(a.data)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(() => parseNpy(npy('<i8', [1], new Uint8Array(8)))).toThrow('dtype <i8 is not supported');
    expect(() => parseNpy(npy('|u1', [4], new Uint8Array(2)))).toThrow(
      'data holds 2 bytes, shape (4,) needs 4',
    );
    expect(() => parseNpy(new Uint8Array(20))).toThrow('no \\x93NUMPY magic');
    expect(() => parseNpy(npy('|u1', [60000, 60000], new Uint8Array(1)), 1e6)).toThrow('exceeds the limit');
  });

  it('reads a crafted .npz split with labels; each image is its own class', async () => {
    const imgs = new Uint8Array(3 * 2 * 2).map((_, i) => i * 20);
    const file = join(tmp, 'tiny.npz');
    await writeFile(
      file,
      zipSync({
        'train_images.npy': npy('|u1', [3, 2, 2], imgs),
        'train_labels.npy': npy('|u1', [3, 1], Uint8Array.from([0, 1, 1])),
        'test_images.npy': npy('|u1', [1, 2, 2], new Uint8Array(4).fill(255)),
      }),
    );
    expect(await detectFormat(file)).toBe('npz');
    const r = await loadTrainingDataset({ path: file, imageSize: 2, secret });
    expect(r.report).toMatchObject({
      source: 'npz',
      images: 3,
      patients: 0,
      unidentifiedImages: 3,
      labels: { '0': 1, '1': 2 },
    });
    expect(Array.from(r.dataset.pixels.subarray(0, 4))).toEqual(
      [0, 20, 40, 60].map((v) => Math.fround(v / 255)),
    );
    const t = await loadTrainingDataset({ path: file, imageSize: 2, secret, split: 'test' });
    expect(t.report.images).toBe(1);
    expect(t.report.labels).toBeNull();
    await expect(new NpzSource({ path: file, split: 'val' }).list()).rejects.toThrow(
      '.npz has no val_images array',
    );
  });

  it('reads the real BreastMNIST file (546/78/156 images, 28×28)', async () => {
    if (!existsSync(MEDMNIST))
      throw new Error(`MedMNIST fixture missing: ${MEDMNIST} (../shared/data/medmnist)`);
    const src = new NpzSource({ path: MEDMNIST, split: 'all' });
    const l = await src.list();
    expect(l.items.length).toBe(546 + 78 + 156);
    const first = await src.read(l.items[0]!, 28);
    expect(first).toMatchObject({
      ok: true,
      frames: [{ originalWidth: 28, originalHeight: 28, bitDepth: 8 }],
    });
    const labels = new Set(l.items.map((i) => i.label));
    expect(labels).toEqual(new Set(['0', '1']));
  });
});
