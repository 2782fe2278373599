import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import pino from 'pino';
import sharp from 'sharp';
import { DEFAULT_LIMITS, type DataLimits, type SkipReason } from '../../site-agent/src/data/data-source';
import { loadTrainingDataset } from '../../site-agent/src/data/load-dataset';
import { imageHeader, writeDicom } from '../../site-agent/src/data/testing/dicom-writer';
import { LogCapture } from './harness';

/**
 * A hospital's data readers fed crafted files, in-process (they never see the network):
 * images declaring absurd sizes, decompression bombs, truncated files, junk with an image
 * extension, a manifest naming files outside the data folder. Each case is one hostile file
 * among honest ones, read through the agent's dataset loader with the default limits unless
 * the case scales them, and asserts: (1) the coded skip reason with its detail, (2) the
 * `item skipped` log line naming it, (3)+(4) every honest image still loads, bit-identical to
 * a load of the folder without the hostile file.
 */

const SECRET = new Uint8Array(32).fill(5);
const SIZE = 16;

interface ReaderCase {
  name: string;
  kind: 'png' | 'dicom';
  reason: SkipReason;
  /** What the skip detail says (null: the reason carries no detail). */
  detail: RegExp | null;
  /** Items skipped for `reason` (default 1). */
  skipped?: number;
  /**
   * Writes the hostile file into `dir` (the data folder) and returns its name, which the
   * folder's manifest then lists like an honest image; null when it wrote no image file.
   */
  craft: (dir: string) => Promise<string | null> | string | null;
  limits?: DataLimits;
}

// ---------------------------------------------------------------- crafting helpers

function crc32(buf: Buffer): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A grayscale 8-bit PNG declaring `w × h` with `idat` as its compressed data. */
function craftedPng(w: number, h: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** One RLE Lossless frame of `pixels` zero bytes (PackBits runs of 128: 64:1). */
function rleZeros(pixels: number): Uint8Array {
  const header = Buffer.alloc(64);
  header.writeUInt32LE(1, 0);
  header.writeUInt32LE(64, 4);
  const runs: number[] = [];
  for (let left = pixels; left > 0; left -= 128) runs.push(257 - Math.min(128, left), 0);
  return new Uint8Array(Buffer.concat([header, Buffer.from(runs)]));
}

const RLE = '1.2.840.10008.1.2.5';

/** An RLE DICOM of `frames` identical frames (encapsulated by hand: the test writer spreads bytes into arrays). */
function rleDicom(rows: number, cols: number, frames: number, frame: Uint8Array): Buffer {
  const head = writeDicom({
    transferSyntax: RLE,
    elements: imageHeader({ rows, cols, bitsAllocated: 8, frames }),
  });
  const item = (len: number) => {
    const b = Buffer.alloc(8);
    b.writeUInt16LE(0xfffe, 0);
    b.writeUInt16LE(0xe000, 2);
    b.writeUInt32LE(len, 4);
    return b;
  };
  const pixelTag = Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  const end = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
  const parts: Buffer[] = [Buffer.from(head), pixelTag, item(0)];
  for (let f = 0; f < frames; f++) parts.push(item(frame.length), Buffer.from(frame));
  return Buffer.concat([...parts, end]);
}

async function honestPng(dir: string, name: string, seed: number): Promise<void> {
  const raw = Buffer.alloc(24 * 24);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + seed * 31) % 256;
  await sharp(raw, { raw: { width: 24, height: 24, channels: 1 } })
    .png()
    .toFile(join(dir, name));
}

function honestDicom(dir: string, name: string, seed: number): void {
  const pixels = new Uint8Array(20 * 20 * 2);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 13 + seed) % 256;
  writeFileSync(
    join(dir, name),
    writeDicom({ elements: imageHeader({ rows: 20, cols: 20, patientId: `P${seed}` }), pixelData: pixels }),
  );
}

// ---------------------------------------------------------------- the table

const CASES: ReaderCase[] = [
  {
    name: 'PNG declaring 100000 × 100000 pixels in a 100-byte file',
    kind: 'png',
    reason: 'too-large',
    detail: /exceeds the limit of 100000000 pixels/,
    craft: (dir) => {
      writeFileSync(join(dir, 'huge.png'), craftedPng(100_000, 100_000, deflateSync(Buffer.alloc(64))));
      return 'huge.png';
    },
  },
  {
    name: 'PNG decompression bomb (10001 × 10001 zeros in ~100 kB)',
    kind: 'png',
    reason: 'too-large',
    detail: /exceeds the limit of 100000000 pixels/,
    craft: (dir) => {
      const rows = Buffer.alloc(10_001 * 10_002); // filter byte + 10001 zero samples per row
      writeFileSync(join(dir, 'bomb.png'), craftedPng(10_001, 10_001, deflateSync(rows, { level: 9 })));
      return 'bomb.png';
    },
  },
  {
    name: 'JPEG whose frame header claims 65000 × 65000',
    kind: 'png',
    reason: 'too-large',
    detail: /exceeds the limit/,
    craft: async (dir) => {
      const jpeg = await sharp(Buffer.alloc(64 * 64, 128), { raw: { width: 64, height: 64, channels: 1 } })
        .jpeg()
        .toBuffer();
      const sof = jpeg.indexOf(Buffer.from([0xff, 0xc0]));
      jpeg.writeUInt16BE(65_000, sof + 5);
      jpeg.writeUInt16BE(65_000, sof + 7);
      writeFileSync(join(dir, 'huge.jpg'), jpeg);
      return 'huge.jpg';
    },
  },
  {
    name: 'PNG truncated in its image data',
    kind: 'png',
    reason: 'decode-failed',
    detail: /not a decodable PNG\/JPEG/,
    craft: async (dir) => {
      const png = await sharp(Buffer.alloc(64 * 64, 9), { raw: { width: 64, height: 64, channels: 1 } })
        .png({ compressionLevel: 0 })
        .toBuffer();
      writeFileSync(join(dir, 'cut.png'), png.subarray(0, Math.floor(png.length / 2)));
      return 'cut.png';
    },
  },
  {
    name: 'random bytes named .png',
    kind: 'png',
    reason: 'decode-failed',
    detail: /not a decodable PNG\/JPEG/,
    craft: (dir) => {
      writeFileSync(
        join(dir, 'junk.png'),
        Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 97) % 256)),
      );
      return 'junk.png';
    },
  },
  {
    name: 'manifest naming files outside the data folder (path traversal)',
    kind: 'png',
    reason: 'missing-file',
    detail: null,
    skipped: 3,
    craft: async (dir) => {
      // A real image outside the folder: reading it would add an image.
      const outside = join(dir, '..', 'outside');
      mkdirSync(outside, { recursive: true });
      await honestPng(outside, 'leak.png', 9);
      writeFileSync(
        join(dir, 'manifest.csv'),
        [
          'file,patient_id',
          'a.png,P1',
          'b.png,P2',
          '../outside/leak.png,P3',
          '/etc/passwd.png,P4',
          'a/../../outside/leak.png,P5',
        ].join('\n'),
      );
      return null;
    },
  },
  {
    name: 'DICOM declaring 60000 × 60000 pixels',
    kind: 'dicom',
    reason: 'too-large',
    detail: /60000 × 60000 pixels exceeds the limit/,
    craft: (dir) => {
      writeFileSync(
        join(dir, 'huge.dcm'),
        writeDicom({ elements: imageHeader({ rows: 60_000, cols: 60_000 }), pixelData: new Uint8Array(16) }),
      );
      return 'huge.dcm';
    },
  },
  {
    name: 'DICOM declaring a million frames',
    kind: 'dicom',
    reason: 'too-large',
    detail: /1000000 frames exceeds the limit of 2000/,
    craft: (dir) => {
      writeFileSync(
        join(dir, 'frames.dcm'),
        writeDicom({
          elements: imageHeader({ rows: 4, cols: 4, frames: 1_000_000 }),
          pixelData: new Uint8Array(32),
        }),
      );
      return 'frames.dcm';
    },
  },
  {
    name: 'DICOM RLE bomb: frames within the limits, decoded total beyond maxBytes',
    kind: 'dicom',
    reason: 'too-large',
    detail: /decode to \d+ bytes, over the limit of 50000000/,
    // Scaled down so that, without the check, the test decodes 60 MB rather than the
    // 1 TB the same trick gives under the default limits (10000 × 10000 × 2000 frames).
    limits: { maxPixels: 1_000_000, maxFrames: 2000, maxBytes: 50_000_000 },
    craft: (dir) => {
      writeFileSync(join(dir, 'rle-bomb.dcm'), rleDicom(1000, 1000, 60, rleZeros(1000 * 1000)));
      return 'rle-bomb.dcm';
    },
  },
  {
    name: 'DICOM with less pixel data than its header declares',
    kind: 'dicom',
    reason: 'truncated',
    detail: /pixel data holds 100 bytes/,
    craft: (dir) => {
      writeFileSync(
        join(dir, 'short.dcm'),
        writeDicom({ elements: imageHeader({ rows: 64, cols: 64 }), pixelData: new Uint8Array(100) }),
      );
      return 'short.dcm';
    },
  },
  {
    name: 'DICOM cut off inside an element whose length points far past the end',
    kind: 'dicom',
    reason: 'truncated',
    detail: /.*/,
    craft: (dir) => {
      const full = writeDicom({
        elements: imageHeader({ rows: 8, cols: 8 }),
        pixelData: new Uint8Array(128),
      });
      writeFileSync(join(dir, 'cut.dcm'), full.subarray(0, full.length - 100));
      return 'cut.dcm';
    },
  },
  {
    name: 'junk named .dcm',
    kind: 'dicom',
    reason: 'not-dicom',
    detail: /no DICM prefix/,
    craft: (dir) => {
      writeFileSync(join(dir, 'junk.dcm'), Buffer.alloc(2048, 0x5a));
      return 'junk.dcm';
    },
  },
];

// ---------------------------------------------------------------- the runner

describe('hostile files for the data readers (in-process, default limits unless scaled)', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'fedssl-hostile-readers-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** A data folder with two honest images of `kind`. */
  async function honestFolder(kind: ReaderCase['kind'], name: string): Promise<string> {
    const dir = join(root, name, 'data');
    mkdirSync(dir, { recursive: true });
    if (kind === 'png') {
      await honestPng(dir, 'a.png', 1);
      await honestPng(dir, 'b.png', 2);
      writeFileSync(join(dir, 'manifest.csv'), 'file,patient_id\na.png,P1\nb.png,P2\n');
    } else {
      honestDicom(dir, 'a.dcm', 1);
      honestDicom(dir, 'b.dcm', 2);
    }
    return dir;
  }

  async function load(dir: string, limits?: DataLimits) {
    const logs = new LogCapture();
    const r = await loadTrainingDataset({
      path: dir,
      imageSize: SIZE,
      secret: SECRET,
      limits: limits ?? DEFAULT_LIMITS,
      logger: pino({ level: 'debug' }, logs),
    });
    return { ...r, logs };
  }

  let n = 0;
  it.each(CASES)('$name → $reason', async (c) => {
    n++;
    const control = await load(await honestFolder(c.kind, `${n}-control`), c.limits);
    const dir = await honestFolder(c.kind, `${n}-hostile`);
    const added = await c.craft(dir);
    if (added && c.kind === 'png') appendFileSync(join(dir, 'manifest.csv'), `${added},PX\n`);
    const { dataset, report, logs } = await load(dir, c.limits);

    // (1) the coded reason with a detail that says why
    expect(report.skipped).toContainEqual({ reason: c.reason, count: c.skipped ?? 1 });
    if (c.detail) {
      const details = report.skippedDetails.filter((d) => d.reason === c.reason).map((d) => d.detail);
      expect(details.join('\n'), JSON.stringify(report.skippedDetails)).toMatch(c.detail);
    }
    // (2) a log line naming it (paths only as tags)
    expect(logs.lines.map((l) => [l.msg, l.reason])).toContainEqual(
      c.reason === 'missing-file' ? ['manifest row skipped', c.reason] : ['item skipped', c.reason],
    );
    expect(JSON.stringify(logs.lines)).not.toContain(dir);
    // (3) + (4) the honest images load, exactly as without the hostile file
    expect(report.items).toBe(control.report.items + (added ? 1 : 0));
    expect(report.images).toBe(control.report.images);
    expect(dataset.count).toBe(control.dataset.count);
    expect(Buffer.from(dataset.pixels.buffer).equals(Buffer.from(control.dataset.pixels.buffer))).toBe(true);
    expect(Array.from(dataset.metadataLabels)).toEqual(Array.from(control.dataset.metadataLabels));
  });
});
