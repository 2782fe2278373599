import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Writable } from 'node:stream';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeGrayscale, listImageFiles, scanFolder } from './folder-source';
import { loadTrainingDataset } from './load-dataset';

let root: string;
const secret = new Uint8Array(32).fill(3);

async function gray8(value: number, w = 20, h = 20): Promise<Buffer> {
  return sharp(Buffer.alloc(w * h, value), { raw: { width: w, height: h, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
}
async function rgb8(r: number, g: number, b: number, w = 20, h = 20): Promise<Buffer> {
  const buf = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) buf.set([r, g, b], i * 3);
  return sharp(buf, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}
async function gray16(value: number, w = 20, h = 20): Promise<Buffer> {
  return sharp(new Uint16Array(w * h).fill(value), { raw: { width: w, height: h, channels: 1 } })
    .toColourspace('grey16')
    .png()
    .toBuffer();
}

/** A pino logger writing into an array, to check what gets logged. */
function captureLogger(level: pino.Level = 'debug'): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'fedssl-folder-'));
  await mkdir(join(root, 'sub'));
  await mkdir(join(root, '.hidden'));
  await writeFile(join(root, 'a-gray.png'), await gray8(128));
  await writeFile(join(root, 'b-rgb.png'), await rgb8(100, 100, 100));
  await writeFile(join(root, 'c-16bit.png'), await gray16(12345));
  await writeFile(join(root, 'sub', 'd-wide.png'), await gray8(200, 40, 20));
  await writeFile(
    join(root, 'sub', 'e.JPG'),
    await sharp(Buffer.alloc(16 * 16 * 3, 90), { raw: { width: 16, height: 16, channels: 3 } })
      .jpeg()
      .toBuffer(),
  );
  await writeFile(join(root, 'f-corrupt.png'), 'this is not a png');
  await symlink(join(root, 'does-not-exist.png'), join(root, 'g-dangling.png'));
  await writeFile(join(root, 'h-unlisted.png'), await gray8(10));
  await writeFile(join(root, '.hidden', 'x.png'), await gray8(10));
  await writeFile(join(root, 'notes.txt'), 'ignored');
  await writeFile(
    join(root, 'manifest.csv'),
    [
      'file,patient_id,view',
      'a-gray.png,"Doe, Jane",AP',
      'b-rgb.png,"Doe, Jane",lateral',
      'c-16bit.png,PAT-0002,AP',
      'sub/d-wide.png,,AP',
      './sub/e.JPG,PAT-0003,AP',
      'f-corrupt.png,PAT-0003,AP',
      'g-dangling.png,PAT-0004,AP',
      'missing.png,PAT-0005,AP',
      'a-gray.png,PAT-9999,AP',
    ].join('\r\n'),
  );
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('listImageFiles', () => {
  it('finds PNG/JPEG recursively, sorted, skipping hidden entries and other files', async () => {
    expect(await listImageFiles(root)).toEqual([
      'a-gray.png',
      'b-rgb.png',
      'c-16bit.png',
      'f-corrupt.png',
      'g-dangling.png',
      'h-unlisted.png',
      'sub/d-wide.png',
      'sub/e.JPG',
    ]);
  });

  it('rejects a path that is not a folder', async () => {
    await expect(listImageFiles(join(root, 'notes.txt'))).rejects.toMatchObject({
      code: 'DATA_SOURCE_INVALID',
    });
    await expect(listImageFiles(join(root, 'nope'))).rejects.toMatchObject({ code: 'DATA_SOURCE_INVALID' });
  });
});

describe('decodeGrayscale', () => {
  it('8-bit gray v → v/255', async () => {
    const d = await decodeGrayscale(await gray8(128), 8);
    expect(d.pixels.length).toBe(64);
    expect(d.bitDepth).toBe(8);
    for (const p of d.pixels) expect(p).toBeCloseTo(128 / 255, 6);
  });

  it('RGB is converted to one luminance channel (neutral gray keeps its value, red ≠ blue)', async () => {
    const g = await decodeGrayscale(await rgb8(100, 100, 100), 8);
    expect(g.pixels.length).toBe(64);
    for (const p of g.pixels) expect(p).toBeCloseTo(100 / 255, 2);
    const red = await decodeGrayscale(await rgb8(255, 0, 0), 4);
    const blue = await decodeGrayscale(await rgb8(0, 0, 255), 4);
    expect(red.pixels[0]).not.toBeCloseTo(blue.pixels[0]!, 2);
  });

  it('16-bit keeps full precision', async () => {
    // At its own size the value comes through exactly.
    const d = await decodeGrayscale(await gray16(12345), 20);
    expect(d.bitDepth).toBe(16);
    for (const p of d.pixels) expect(p).toBe(Math.fround(12345 / 65535));
    // Resized, two levels closer than one 8-bit step (257/65535) still differ.
    const a = await decodeGrayscale(await gray16(12345), 8);
    const b = await decodeGrayscale(await gray16(12400), 8);
    expect(Math.abs(a.pixels[0]! - 12345 / 65535)).toBeLessThan(3e-4);
    expect(b.pixels[0]! - a.pixels[0]!).toBeGreaterThan(40 / 65535);
    expect(b.pixels[0]! - a.pixels[0]!).toBeLessThan(70 / 65535);
  });

  it('non-square images are cover-cropped to the square size (not squashed)', async () => {
    // 40×20 with the leftmost 8 columns dark: cover keeps the centre 20 columns (all bright);
    // fill would squash the dark 20 % into 2 of 10 output columns.
    const w = 40;
    const h = 20;
    const buf = Buffer.alloc(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) buf[y * w + x] = x < 8 ? 0 : 255;
    const png = await sharp(buf, { raw: { width: w, height: h, channels: 1 } })
      .toColourspace('b-w')
      .png()
      .toBuffer();
    const d = await decodeGrayscale(png, 10);
    expect(d.originalWidth).toBe(40);
    expect(d.originalHeight).toBe(20);
    expect(Math.min(...d.pixels)).toBeGreaterThan(0.99);
  });
});

describe('scanFolder', () => {
  it('joins files with the manifest and counts what it leaves out', async () => {
    const scan = await scanFolder({ root });
    expect(scan.images.map((i) => i.file)).toEqual([
      'a-gray.png',
      'b-rgb.png',
      'c-16bit.png',
      'f-corrupt.png',
      'g-dangling.png',
      'sub/d-wide.png',
      'sub/e.JPG',
    ]);
    expect(scan.images[0]).toEqual({ file: 'a-gray.png', patientId: 'Doe, Jane', tags: { view: 'AP' } });
    expect(scan.images[5]!.patientId).toBeNull();
    expect(scan.skipped.toList()).toEqual([
      { reason: 'duplicate-manifest-row', count: 1 },
      { reason: 'missing-file', count: 1 },
      { reason: 'not-in-manifest', count: 1 },
    ]);
  });

  it('without a manifest uses every image, none with a patient id', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fedssl-plain-'));
    try {
      await writeFile(join(dir, 'x.png'), await gray8(1));
      const scan = await scanFolder({ root: dir });
      expect(scan).toMatchObject({
        manifestPath: null,
        images: [{ file: 'x.png', patientId: null, tags: {} }],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names a missing patient column', async () => {
    await expect(scanFolder({ root, patientColumn: 'mrn' })).rejects.toThrow(
      'manifest has no "mrn" column (columns: file, patient_id, view)',
    );
  });
});

describe('loadTrainingDataset', () => {
  it('loads, skips bad files with reasons, and pseudonymizes patients into classes', async () => {
    const { logger, lines } = captureLogger('debug');
    const { dataset, report } = await loadTrainingDataset({ path: root, imageSize: 8, secret, logger });
    // Kept: a, b (Doe, Jane), c (PAT-0002), d (no id), e (PAT-0003).
    expect(dataset.count).toBe(5);
    expect(dataset.width).toBe(8);
    expect(dataset.pixels.length).toBe(5 * 64);
    expect(dataset.pixels[0]).toBeCloseTo(128 / 255, 6);
    expect(report).toMatchObject({
      images: 5,
      patients: 3,
      unidentifiedImages: 1,
      metadataClasses: 4,
      imageSize: 8,
      manifestUsed: true,
      sizes: { minWidth: 16, maxWidth: 40, minHeight: 16, maxHeight: 20, bitDepths: { '8': 4, '16': 1 } },
    });
    expect(report.skipped).toEqual([
      { reason: 'decode-failed', count: 1 },
      { reason: 'duplicate-manifest-row', count: 1 },
      { reason: 'missing-file', count: 1 },
      { reason: 'not-in-manifest', count: 1 },
      { reason: 'unreadable', count: 1 },
    ]);
    const l = Array.from(dataset.metadataLabels);
    expect(l[0]).toBe(l[1]); // same patient, same class
    expect(new Set([l[0], l[2], l[4]]).size).toBe(3);
    expect(l[3]).toBe(3); // the image without an id gets its own class after the patients

    // Raw ids and file names appear nowhere: not in the dataset, its JSON, the report, or the logs.
    const everything = [JSON.stringify(dataset), JSON.stringify(report), ...lines].join('\n');
    for (const secretText of [
      'Doe',
      'Jane',
      'PAT-0002',
      'PAT-0003',
      'a-gray',
      'f-corrupt',
      'g-dangling',
      'sub/',
    ]) {
      expect(everything).not.toContain(secretText);
    }
    expect(Object.keys(dataset).sort()).toEqual([
      'count',
      'height',
      'metadataClasses',
      'metadataLabels',
      'pixels',
      'width',
    ]);
    // Skips are visible at debug level by hashed tag only.
    expect(
      lines.some((s) => s.includes('"reason":"decode-failed"') && /"fileTag":"[0-9a-f]{12}"/.test(s)),
    ).toBe(true);
  });

  it('same inputs → same dataset; another secret → other class numbering, same grouping', async () => {
    const a = await loadTrainingDataset({ path: root, imageSize: 8, secret });
    const b = await loadTrainingDataset({ path: root, imageSize: 8, secret, concurrency: 1 });
    expect(Array.from(b.dataset.metadataLabels)).toEqual(Array.from(a.dataset.metadataLabels));
    expect(Buffer.from(b.dataset.pixels.buffer).equals(Buffer.from(a.dataset.pixels.buffer))).toBe(true);
    const c = await loadTrainingDataset({ path: root, imageSize: 8, secret: new Uint8Array(32).fill(4) });
    const la = Array.from(a.dataset.metadataLabels);
    const lc = Array.from(c.dataset.metadataLabels);
    for (let i = 0; i < la.length; i++)
      for (let j = 0; j < la.length; j++) expect(la[i] === la[j]).toBe(lc[i] === lc[j]);
  });

  it('can use a categorical column instead of the patient', async () => {
    const { dataset } = await loadTrainingDataset({
      path: root,
      imageSize: 8,
      secret,
      metadataColumn: 'view',
    });
    expect(Array.from(dataset.metadataLabels)).toEqual([0, 1, 0, 0, 0]);
    expect(dataset.metadataClasses).toBe(2);
  });

  it('DATA_EMPTY when nothing loads', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fedssl-empty-'));
    try {
      await writeFile(join(dir, 'bad.png'), 'nope');
      await expect(loadTrainingDataset({ path: dir, imageSize: 8, secret })).rejects.toMatchObject({
        code: 'DATA_EMPTY',
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
