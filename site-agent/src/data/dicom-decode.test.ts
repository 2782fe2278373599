import { existsSync, readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import * as dicomParser from 'dicom-parser';
import { beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from './data-source';
import { decodeDicom, type DicomDecodeResult, type DicomImage } from './dicom-decode';
import { decodeRle } from './dicom-codecs';
import { imageHeader, writeDicom } from './testing/dicom-writer';

/** Real DICOM files (pydicom's test set), read from ../shared/data/dicom beside the repository. */
export const DICOM_DIR = resolve(__dirname, '../../../../shared/data/dicom');

function requireDicomDir(): void {
  if (!existsSync(join(DICOM_DIR, 'MR_small.dcm')))
    throw new Error(
      `real DICOM fixtures missing: expected ${DICOM_DIR} (../shared/data/dicom relative to the repository root, see its SOURCES.md)`,
    );
}

const opts = { limits: DEFAULT_LIMITS, withModalityValues: true };
async function decodeFile(name: string): Promise<DicomDecodeResult> {
  return decodeDicom(new Uint8Array(readFileSync(join(DICOM_DIR, name))), opts);
}
function ok(r: DicomDecodeResult): DicomImage {
  if (!r.ok) throw new Error(`expected an image, got ${r.reason}: ${r.detail}`);
  return r;
}

describe('decodeDicom on the real files', () => {
  beforeAll(requireDicomDir);

  it('every file is read or skipped with its one expected reason', async () => {
    const expected: Record<string, string> = {
      'CT_small.dcm': 'ok',
      'ExplVR_BigEnd.dcm': 'ok',
      'JPEG-lossy.dcm': 'unsupported-syntax',
      'JPEG2000.dcm': 'ok',
      'MR_small.dcm': 'ok',
      'MR_small_RLE.dcm': 'ok',
      'MR_small_bigendian.dcm': 'ok',
      'MR_small_implicit.dcm': 'ok',
      'MR_small_jp2klossless.dcm': 'ok',
      'MR_small_jpeg_ls_lossless.dcm': 'ok',
      'MR_truncated.dcm': 'truncated',
      'SC_rgb_small_odd.dcm': 'ok',
      'badVR.dcm': 'invalid-header',
      'liver_1frame.dcm': 'unsupported-pixel-format',
      'no_meta.dcm': 'not-dicom',
      'rtplan.dcm': 'no-pixel-data',
    };
    const files = (await readdir(DICOM_DIR)).filter((f) => f.endsWith('.dcm')).sort();
    const got: Record<string, string> = {};
    for (const f of files) {
      const r = await decodeFile(f);
      got[f] = r.ok ? 'ok' : r.reason;
      if (!r.ok) expect(r.detail.length).toBeGreaterThan(10);
      else expect(r.frames.every((fr) => fr.every((v) => v >= 0 && v <= 1))).toBe(true);
    }
    expect(got).toEqual(expected);
  });

  it('CT_small: 128×128, modality values = stored signed values + Rescale Intercept (-1024), min–max window', async () => {
    const r = ok(await decodeFile('CT_small.dcm'));
    expect([r.width, r.height, r.frames.length, r.bitsStored]).toEqual([128, 128, 1, 16]);
    expect(r.meta).toMatchObject({ patientId: '1CT1', modality: 'CT', manufacturer: 'GE MEDICAL SYSTEMS' });
    // Stored values read straight from the pixel data element as little-endian int16.
    const buf = readFileSync(join(DICOM_DIR, 'CT_small.dcm'));
    const at = dicomParser.parseDicom(new Uint8Array(buf)).elements.x7fe00010!.dataOffset;
    const stored = Array.from({ length: 128 * 128 }, (_, i) => buf.readInt16LE(at + 2 * i));
    const hu = r.modalityValues![0]!;
    for (let i = 0; i < stored.length; i += 97) expect(hu[i]).toBe(stored[i]! - 1024);
    const unit = r.frames[0]!;
    const min = hu.reduce((a, b) => Math.min(a, b));
    const max = hu.reduce((a, b) => Math.max(a, b));
    for (let i = 0; i < unit.length; i += 101) expect(unit[i]).toBeCloseTo((hu[i]! - min) / (max - min), 6);
  });

  it('MR_small in every lossless encoding decodes to exactly the pixels of the uncompressed file', async () => {
    const ref = ok(await decodeFile('MR_small.dcm'));
    expect([ref.width, ref.height]).toEqual([64, 64]);
    // Window 600/1600 from the header, linear VOI function (PS3.3 C.11.2.1.2.1).
    const v = ref.modalityValues![0]!;
    const u = ref.frames[0]!;
    for (let i = 0; i < v.length; i += 37) {
      const x = v[i]!;
      const expect01 =
        x <= 600 - 0.5 - 1599 / 2 ? 0 : x > 600 - 0.5 + 1599 / 2 ? 1 : (x - 599.5) / 1599 + 0.5;
      expect(u[i]).toBeCloseTo(expect01, 6);
    }
    for (const f of [
      'MR_small_implicit.dcm',
      'MR_small_bigendian.dcm',
      'MR_small_RLE.dcm',
      'MR_small_jp2klossless.dcm',
      'MR_small_jpeg_ls_lossless.dcm',
    ]) {
      const r = ok(await decodeFile(f));
      expect([f, r.width, r.height, r.meta.patientId]).toEqual([f, 64, 64, '4MR1']);
      expect(Array.from(r.modalityValues![0]!)).toEqual(Array.from(v));
      expect(Array.from(r.frames[0]!)).toEqual(Array.from(u));
    }
  });

  it('colour (RGB, big endian, odd size) becomes luminance', async () => {
    const rgb = ok(await decodeFile('SC_rgb_small_odd.dcm'));
    expect([rgb.width, rgb.height]).toEqual([3, 3]);
    const buf = readFileSync(join(DICOM_DIR, 'SC_rgb_small_odd.dcm'));
    const px = buf.subarray(buf.length - 28, buf.length - 1);
    for (let i = 0; i < 9; i++)
      expect(rgb.frames[0]![i]).toBeCloseTo(
        (0.299 * px[3 * i]! + 0.587 * px[3 * i + 1]! + 0.114 * px[3 * i + 2]!) / 255,
        5,
      );
    const be = ok(await decodeFile('ExplVR_BigEnd.dcm'));
    expect([be.width, be.height, be.meta.modality]).toEqual([80, 60, 'US']);
  });
});

describe('decodeDicom on crafted files', () => {
  const ramp16 = (n: number, f: (i: number) => number, le = true) => {
    const b = new Uint8Array(2 * n);
    for (let i = 0; i < n; i++) {
      const v = f(i) & 0xffff;
      b[2 * i + (le ? 0 : 1)] = v & 0xff;
      b[2 * i + (le ? 1 : 0)] = v >> 8;
    }
    return b;
  };

  it('refuses a header claiming 60000×60000 or 100000 frames before allocating anything', async () => {
    const huge = writeDicom({
      elements: imageHeader({ rows: 60000, cols: 60000 }),
      pixelData: new Uint8Array(8),
    });
    expect(await decodeDicom(huge, opts)).toEqual({
      ok: false,
      reason: 'too-large',
      detail: `60000 × 60000 pixels exceeds the limit of ${DEFAULT_LIMITS.maxPixels} per frame`,
    });
    const many = writeDicom({
      elements: imageHeader({ rows: 2, cols: 2, frames: 100000 }),
      pixelData: new Uint8Array(8),
    });
    expect(await decodeDicom(many, opts)).toMatchObject({ ok: false, reason: 'too-large' });
    const small = { ...DEFAULT_LIMITS, maxPixels: 15 };
    const r = await decodeDicom(
      writeDicom({ elements: imageHeader({ rows: 4, cols: 4 }), pixelData: new Uint8Array(32) }),
      {
        limits: small,
      },
    );
    expect(r).toMatchObject({ ok: false, reason: 'too-large' });
  });

  it('pixel data shorter than the header says is truncated, not read past', async () => {
    const f = writeDicom({
      elements: imageHeader({ rows: 4, cols: 4, frames: 2 }),
      pixelData: new Uint8Array(32),
    });
    expect(await decodeDicom(f, opts)).toMatchObject({ ok: false, reason: 'truncated' });
  });

  it('multi-frame: every frame an image; MONOCHROME1 inverted; signed 12-of-16 bits; big endian', async () => {
    const n = 6;
    const frames = 3;
    // Signed, 12 bits stored: stored values -2048..2047, junk in the top 4 bits is ignored.
    const vals = (f: number, i: number) => (i - 3) * 100 * (f + 1);
    for (const le of [true, false]) {
      const px = new Uint8Array(2 * n * frames);
      for (let f = 0; f < frames; f++)
        px.set(
          ramp16(n, (i) => (vals(f, i) & 0x0fff) | 0xa000, le),
          2 * n * f,
        );
      const file = writeDicom({
        transferSyntax: le ? '1.2.840.10008.1.2.1' : '1.2.840.10008.1.2.2',
        elements: imageHeader({
          rows: 2,
          cols: 3,
          bitsStored: 12,
          signed: true,
          frames,
          photometric: 'MONOCHROME1',
        }),
        pixelData: px,
      });
      const r = ok(await decodeDicom(file, opts));
      expect(r.frames).toHaveLength(3);
      for (let f = 0; f < frames; f++) {
        expect(Array.from(r.modalityValues![f]!)).toEqual(Array.from({ length: n }, (_, i) => vals(f, i)));
        // Min–max then inverted: the largest value is darkest.
        expect(r.frames[f]![n - 1]).toBe(0);
        expect(r.frames[f]![0]).toBe(1);
      }
    }
  });

  it('8-bit signed and unsigned, Rescale Slope/Intercept and a window from the header', async () => {
    const px = Uint8Array.from([0, 10, 20, 246]); // signed: 0, 10, 20, -10
    const file = writeDicom({
      elements: imageHeader({
        rows: 2,
        cols: 2,
        bitsAllocated: 8,
        signed: true,
        extra: [
          { tag: 0x00281052, vr: 'DS', value: '5' },
          { tag: 0x00281053, vr: 'DS', value: '2' },
          { tag: 0x00281050, vr: 'DS', value: '25\\100' },
          { tag: 0x00281051, vr: 'DS', value: '41\\10' },
        ],
      }),
      pixelData: px,
    });
    const r = ok(await decodeDicom(file, opts));
    expect(Array.from(r.modalityValues![0]!)).toEqual([5, 25, 45, -15]);
    // Window 25/41: lo = 4.5, hi = 44.5.
    expect(Array.from(r.frames[0]!)).toEqual(
      [(5 - 24.5) / 40 + 0.5, (25 - 24.5) / 40 + 0.5, 1, 0].map(Math.fround),
    );
  });

  it('a bare dataset without preamble is read; random bytes are not-dicom', async () => {
    const bare = writeDicom({
      bare: true,
      elements: imageHeader({ rows: 1, cols: 2, patientId: 'P-1' }),
      pixelData: ramp16(2, (i) => i * 7),
    });
    const r = ok(await decodeDicom(bare, opts));
    expect(r.meta.patientId).toBe('P-1');
    expect(Array.from(r.frames[0]!)).toEqual([0, 1]);
    const junk = new Uint8Array(500).map((_, i) => (i * 73) & 0xff);
    expect(await decodeDicom(junk, opts)).toMatchObject({ ok: false, reason: 'not-dicom' });
    expect(await decodeDicom(new Uint8Array(0), opts)).toMatchObject({ ok: false });
  });

  it('RLE by hand: literal and repeat runs, 8-bit 3-frame and 16-bit byte planes', async () => {
    // 8-bit, 2×2: segment = repeat 0x05 ×2 (-1, 5), literal [7, 9] (1, 7, 9).
    const header = (segments: number[]) => {
      const h = new Uint8Array(64);
      const dv = new DataView(h.buffer);
      dv.setUint32(0, segments.length, true);
      segments.forEach((o, i) => dv.setUint32(4 + 4 * i, o, true));
      return h;
    };
    const seg = Uint8Array.from([0xff, 5, 1, 7, 9]);
    const frame = Uint8Array.from([...header([64]), ...seg]);
    expect(Array.from(decodeRle(frame, 2, 2, 1, 1))).toEqual([5, 5, 7, 9]);
    // 16-bit: MSB plane then LSB plane → little-endian output.
    const msb = Uint8Array.from([1, 0x01, 0x02]);
    const lsb = Uint8Array.from([1, 0x03, 0x04]);
    const f16 = Uint8Array.from([...header([64, 64 + msb.length]), ...msb, ...lsb]);
    expect(Array.from(decodeRle(f16, 2, 1, 1, 2))).toEqual([0x03, 0x01, 0x04, 0x02]);
    expect(() => decodeRle(Uint8Array.from([...header([64]), 0]), 2, 2, 1, 1)).toThrow('decodes to');
    const dcm = writeDicom({
      transferSyntax: '1.2.840.10008.1.2.5',
      elements: imageHeader({ rows: 2, cols: 2, bitsAllocated: 8, frames: 3 }),
      fragments: [frame, frame, frame],
    });
    const r = ok(await decodeDicom(dcm, opts));
    expect(r.frames.map((f) => Array.from(f))).toEqual([0, 1, 2].map(() => [0, 0, 0.5, 1]));
    const bad = writeDicom({
      transferSyntax: '1.2.840.10008.1.2.5',
      elements: imageHeader({ rows: 2, cols: 2, bitsAllocated: 8 }),
      fragments: [Uint8Array.from([...header([64]), 0])],
    });
    expect(await decodeDicom(bad, opts)).toMatchObject({ ok: false, reason: 'decode-failed' });
  });

  it('an unknown transfer syntax and a corrupt JPEG 2000 codestream are skipped with a reason', async () => {
    const unknown = writeDicom({
      transferSyntax: '1.2.840.10008.1.2.4.100',
      elements: imageHeader({ rows: 2, cols: 2 }),
      fragments: [new Uint8Array(10)],
    });
    expect(await decodeDicom(unknown, opts)).toMatchObject({ ok: false, reason: 'unsupported-syntax' });
    const j2k = writeDicom({
      transferSyntax: '1.2.840.10008.1.2.4.90',
      elements: imageHeader({ rows: 2, cols: 2 }),
      fragments: [Uint8Array.from([0xff, 0x4f, 0xff, 0x51, 1, 2, 3, 4])],
    });
    expect(await decodeDicom(j2k, opts)).toMatchObject({ ok: false, reason: 'decode-failed' });
  });
});

describe('lossy decoding within tolerance', () => {
  beforeAll(requireDicomDir);

  it('MR_small re-encoded as JPEG-LS near-lossless (NEAR=3) decodes within ±3 of the original', async () => {
    const ref = ok(await decodeFile('MR_small.dcm'));
    const stored = ref.modalityValues![0]!; // no rescale in MR_small: modality = stored
    // Encode with CharLS's encoder (same package, encoder build) in the test.
    type Enc = {
      getDecodedBuffer(info: object): Uint8Array;
      setNearLossless(n: number): void;
      encode(): void;
      getEncodedBuffer(): Uint8Array;
      delete(): void;
    };
    const factory = createRequire(__filename)('@cornerstonejs/codec-charls/wasmjs') as (
      o: object,
    ) => Promise<{
      JpegLSEncoder: new () => Enc;
    }>;
    const charls = await factory({ print: () => undefined, printErr: () => undefined });
    const enc = new charls.JpegLSEncoder();
    const raw = new Int16Array(Array.from(stored));
    enc
      .getDecodedBuffer({ width: 64, height: 64, bitsPerSample: 16, componentCount: 1, isSigned: true })
      .set(new Uint8Array(raw.buffer));
    enc.setNearLossless(3);
    enc.encode();
    const codestream = new Uint8Array(enc.getEncodedBuffer());
    enc.delete();
    const dcm = writeDicom({
      transferSyntax: '1.2.840.10008.1.2.4.81',
      elements: imageHeader({
        rows: 64,
        cols: 64,
        signed: true,
        extra: [
          { tag: 0x00281050, vr: 'DS', value: '600' },
          { tag: 0x00281051, vr: 'DS', value: '1600' },
        ],
      }),
      fragments: [codestream],
    });
    const lossy = ok(await decodeDicom(dcm, opts));
    const got = lossy.modalityValues![0]!;
    let maxErr = 0;
    let differing = 0;
    for (let i = 0; i < got.length; i++) {
      const e = Math.abs(got[i]! - stored[i]!);
      maxErr = Math.max(maxErr, e);
      if (e > 0) differing++;
    }
    expect(maxErr).toBeLessThanOrEqual(3);
    expect(differing).toBeGreaterThan(0); // it really was lossy
    // After the 1600-wide window, ±3 stored units are ±3/1599 of the range.
    for (let i = 0; i < got.length; i++)
      expect(Math.abs(lossy.frames[0]![i]! - ref.frames[0]![i]!)).toBeLessThanOrEqual(3 / 1599 + 1e-6);
  });
});
