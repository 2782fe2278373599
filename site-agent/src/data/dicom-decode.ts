import * as dicomParser from 'dicom-parser';
import type { DataLimits, SkipReason } from './data-source';
import {
  decodeJpeg2000,
  decodeJpegBaseline,
  decodeJpegLossless,
  decodeJpegLs,
  decodeRle,
  type CodecFrame,
} from './dicom-codecs';

/**
 * One DICOM object (Part 10 file, or a dataset without the file meta header) → grayscale
 * frames in [0, 1] at their stored size, plus the few tags fedssl uses.
 *
 * The pixel pipeline follows PS3.3 C.7.6.3 and C.11: stored values (bits stored, sign)
 * → Rescale Slope/Intercept → VOI window (Window Center/Width, first pair, linear
 * function; without one, the frame's min–max) → MONOCHROME1 inverted so that bright is
 * always "more signal". Colour (RGB, YBR_FULL) becomes luminance. Every problem becomes
 * one skip reason with a detail; nothing here throws for a bad file.
 */

/** Transfer syntaxes, with the name shown in skip details. */
export const TRANSFER_SYNTAXES: Readonly<Record<string, string>> = {
  '1.2.840.10008.1.2': 'Implicit VR Little Endian',
  '1.2.840.10008.1.2.1': 'Explicit VR Little Endian',
  '1.2.840.10008.1.2.2': 'Explicit VR Big Endian',
  '1.2.840.10008.1.2.1.99': 'Deflated Explicit VR Little Endian',
  '1.2.840.10008.1.2.5': 'RLE Lossless',
  '1.2.840.10008.1.2.4.50': 'JPEG Baseline (8-bit)',
  '1.2.840.10008.1.2.4.51': 'JPEG Extended (12-bit)',
  '1.2.840.10008.1.2.4.57': 'JPEG Lossless (process 14)',
  '1.2.840.10008.1.2.4.70': 'JPEG Lossless (process 14, SV1)',
  '1.2.840.10008.1.2.4.80': 'JPEG-LS Lossless',
  '1.2.840.10008.1.2.4.81': 'JPEG-LS Near-Lossless',
  '1.2.840.10008.1.2.4.90': 'JPEG 2000 Lossless',
  '1.2.840.10008.1.2.4.91': 'JPEG 2000',
};

const IMPLICIT_LE = '1.2.840.10008.1.2';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const NATIVE = new Set([IMPLICIT_LE, '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2']);

/** The tags fedssl reads, raw (the caller pseudonymizes identifiers at once). */
export interface DicomMeta {
  patientId: string | null;
  studyInstanceUid: string | null;
  modality: string | null;
  bodyPartExamined: string | null;
  manufacturer: string | null;
  transferSyntax: string;
}

export interface DicomImage {
  ok: true;
  width: number;
  height: number;
  bitsStored: number;
  /** One entry per frame: `width × height` values in [0, 1]. */
  frames: Float32Array[];
  /** Modality values (after rescale) per frame, when asked for. */
  modalityValues?: Float32Array[];
  meta: DicomMeta;
}
export type DicomDecodeResult = DicomImage | { ok: false; reason: SkipReason; detail: string };

function fail(reason: SkipReason, detail: string): DicomDecodeResult {
  return { ok: false, reason, detail };
}

function str(ds: dicomParser.DataSet, tag: string): string | null {
  try {
    const v = ds.string(tag);
    return v === undefined || v.trim() === '' ? null : v.trim();
  } catch {
    return null;
  }
}

function parseError(e: unknown): string {
  if (typeof e === 'string') return e;
  const x = e as { exception?: unknown; message?: unknown };
  if (typeof x?.exception === 'string') return x.exception;
  if (typeof x?.message === 'string') return x.message;
  return String(e);
}

/** Parse a Part 10 file, or a bare implicit-little-endian dataset (no 128-byte preamble). */
function parse(bytes: Uint8Array): { ds: dicomParser.DataSet } | { reason: SkipReason; detail: string } {
  try {
    return { ds: dicomParser.parseDicom(bytes) };
  } catch (e) {
    const msg = parseError(e);
    if (/overrun|overread|end of buffer|beyond/i.test(msg))
      return { reason: 'truncated', detail: 'the file ends inside a data element (truncated)' };
    if (!/DICM prefix not found/.test(msg))
      return { reason: 'not-dicom', detail: `DICOM header cannot be parsed: ${msg.slice(0, 120)}` };
  }
  // No "DICM" at byte 128: an old-style dataset without file meta. Try explicit then
  // implicit VR little endian; accept a result only if it has the SOP Class UID that every
  // image object must have: a misaligned parse (junk before the first element) swallows the
  // identifying tags into one bogus element and must not pass as an image without metadata.
  for (const syntax of [EXPLICIT_LE, IMPLICIT_LE]) {
    try {
      const ds = dicomParser.parseDicom(bytes, { TransferSyntaxUID: syntax });
      if (ds.elements.x00080016) return { ds };
    } catch {
      // Try the other encoding; a wrong guess often reads past the end.
    }
  }
  return {
    reason: 'not-dicom',
    detail:
      'no DICM prefix, and read as a bare dataset it has no SOP Class UID (not DICOM, or junk before the first element)',
  };
}

/** Options of {@link decodeDicom}. */
export interface DecodeDicomOptions {
  limits: DataLimits;
  /** Also return the modality values (tests, statistics). */
  withModalityValues?: boolean;
}

/**
 * Decode a DICOM object. Never throws: a file it cannot read correctly is a skip with one
 * reason (truncated, not-dicom, no-pixel-data, unsupported-syntax, unsupported-pixel-format,
 * invalid-header, too-large, decode-failed).
 */
export async function decodeDicom(bytes: Uint8Array, opts: DecodeDicomOptions): Promise<DicomDecodeResult> {
  const parsed = parse(bytes);
  if (!('ds' in parsed)) return fail(parsed.reason, parsed.detail);
  const ds = parsed.ds;
  try {
    return await decodeDataSet(ds, opts);
  } catch (e) {
    return fail('decode-failed', `pixel data could not be decoded: ${parseError(e).slice(0, 160)}`);
  }
}

async function decodeDataSet(ds: dicomParser.DataSet, opts: DecodeDicomOptions): Promise<DicomDecodeResult> {
  const syntax = str(ds, 'x00020010') ?? IMPLICIT_LE;
  const meta: DicomMeta = {
    patientId: str(ds, 'x00100020'),
    studyInstanceUid: str(ds, 'x0020000d'),
    modality: str(ds, 'x00080060'),
    bodyPartExamined: str(ds, 'x00180015'),
    manufacturer: str(ds, 'x00080070'),
    transferSyntax: syntax,
  };
  const pixel = ds.elements.x7fe00010;
  if (!pixel) return fail('no-pixel-data', `no Pixel Data element (Modality ${meta.modality ?? 'unknown'})`);

  const rows = ds.uint16('x00280010') ?? 0;
  const cols = ds.uint16('x00280011') ?? 0;
  const spp = ds.uint16('x00280002') ?? 1;
  const bitsAllocated = ds.uint16('x00280100') ?? 0;
  const bitsStored = ds.uint16('x00280101') ?? bitsAllocated;
  const signed = (ds.uint16('x00280103') ?? 0) === 1;
  const photometric = (str(ds, 'x00280004') ?? (spp === 1 ? 'MONOCHROME2' : 'RGB')).toUpperCase();
  const planar = (ds.uint16('x00280006') ?? 0) === 1;
  const framesText = str(ds, 'x00280008');
  const frames = framesText === null ? 1 : Number(framesText);

  if (rows < 1 || cols < 1) return fail('invalid-header', `Rows × Columns is ${rows} × ${cols}`);
  if (!Number.isInteger(frames) || frames < 1)
    return fail('invalid-header', `Number of Frames "${framesText}" is not a positive integer`);
  // Limits before any allocation: the header may claim anything.
  if (rows * cols > opts.limits.maxPixels)
    return fail(
      'too-large',
      `${cols} × ${rows} pixels exceeds the limit of ${opts.limits.maxPixels} per frame`,
    );
  if (frames > opts.limits.maxFrames)
    return fail('too-large', `${frames} frames exceeds the limit of ${opts.limits.maxFrames}`);
  if (bitsAllocated !== 8 && bitsAllocated !== 16)
    return fail(
      'unsupported-pixel-format',
      `${bitsAllocated}-bit samples${meta.modality === 'SEG' ? ' (segmentation)' : ''}; only 8 and 16 bits are read`,
    );
  if (bitsStored < 1 || bitsStored > bitsAllocated)
    return fail('invalid-header', `Bits Stored ${bitsStored} with Bits Allocated ${bitsAllocated}`);
  if (spp !== 1 && spp !== 3) return fail('unsupported-pixel-format', `${spp} samples per pixel`);
  const mono = photometric === 'MONOCHROME1' || photometric === 'MONOCHROME2';
  if (spp === 1 && !mono)
    return fail('unsupported-pixel-format', `photometric interpretation ${photometric}`);
  if (spp === 3 && !['RGB', 'YBR_FULL', 'YBR_RCT', 'YBR_ICT', 'YBR_FULL_422'].includes(photometric))
    return fail('unsupported-pixel-format', `photometric interpretation ${photometric}`);

  const bps = bitsAllocated / 8;
  const frameSamples = rows * cols * spp;
  // Compressed frames can decode to far more than the file holds (an RLE or JPEG bomb):
  // bound the decoded total before decoding anything.
  const decodedBytes = frameSamples * bps * frames;
  if (decodedBytes > opts.limits.maxBytes)
    return fail(
      'too-large',
      `${frames} frame(s) of ${cols} × ${rows} decode to ${decodedBytes} bytes, over the limit of ${opts.limits.maxBytes}`,
    );
  const name = TRANSFER_SYNTAXES[syntax] ?? 'unknown';
  const byteArray = ds.byteArray;
  const rawFrames: { bytes: Uint8Array; littleEndian: boolean; planar: boolean; rgbFromCodec: boolean }[] =
    [];

  if (NATIVE.has(syntax)) {
    if (pixel.encapsulatedPixelData)
      return fail('invalid-header', `encapsulated pixel data with native transfer syntax ${name}`);
    if (spp === 3 && photometric === 'YBR_FULL_422')
      return fail('unsupported-pixel-format', 'native YBR_FULL_422 (subsampled) colour');
    const frameBytes = frameSamples * bps;
    if (pixel.length < frameBytes * frames)
      return fail(
        'truncated',
        `pixel data holds ${pixel.length} bytes, ${frames} frame(s) of ${cols} × ${rows} need ${frameBytes * frames}`,
      );
    for (let f = 0; f < frames; f++) {
      const start = pixel.dataOffset + f * frameBytes;
      rawFrames.push({
        bytes: byteArray.subarray(start, start + frameBytes),
        littleEndian: syntax !== '1.2.840.10008.1.2.2',
        planar,
        rgbFromCodec: false,
      });
    }
  } else {
    if (!(syntax in TRANSFER_SYNTAXES) || syntax === '1.2.840.10008.1.2.1.99')
      return fail('unsupported-syntax', `transfer syntax ${syntax} (${name}) has no decoder here`);
    if (syntax === '1.2.840.10008.1.2.4.51' && bitsStored > 8)
      return fail(
        'unsupported-syntax',
        `${name} with ${bitsStored} bits stored: the installed JPEG decoder (libjpeg-turbo 8-bit) reads 8-bit JPEG only`,
      );
    if (!pixel.encapsulatedPixelData || !pixel.fragments)
      return fail('invalid-header', `${name} needs encapsulated pixel data`);
    const fragments = pixel.fragments;
    if (fragments.length === 0) return fail('no-pixel-data', 'encapsulated pixel data without fragments');
    for (let f = 0; f < frames; f++) {
      let encoded: Uint8Array;
      if (frames === 1) {
        encoded = dicomParser.readEncapsulatedPixelDataFromFragments(ds, pixel, 0, fragments.length);
      } else if ((pixel.basicOffsetTable?.length ?? 0) > 0) {
        encoded = dicomParser.readEncapsulatedImageFrame(ds, pixel, f);
      } else if (fragments.length === frames) {
        encoded = dicomParser.readEncapsulatedPixelDataFromFragments(ds, pixel, f, 1);
      } else if (syntax.startsWith('1.2.840.10008.1.2.4.5') || syntax.startsWith('1.2.840.10008.1.2.4.7')) {
        const bot = dicomParser.createJPEGBasicOffsetTable(ds, pixel);
        encoded = dicomParser.readEncapsulatedImageFrame(ds, pixel, f, bot);
      } else {
        return fail(
          'invalid-header',
          `${fragments.length} fragments without an offset table cannot be split into ${frames} frames`,
        );
      }
      const decoded = await decodeFrame(syntax, encoded, cols, rows, spp, bps);
      if ('error' in decoded) return fail('decode-failed', `${name}: ${decoded.error}`);
      rawFrames.push({ bytes: decoded.bytes, littleEndian: true, planar: false, rgbFromCodec: decoded.rgb });
    }
  }

  const slope = ds.floatString('x00281053') ?? 1;
  const intercept = ds.floatString('x00281052') ?? 0;
  const center = ds.floatString('x00281050', 0);
  const width = ds.floatString('x00281051', 0);
  const hasWindow = center !== undefined && width !== undefined && Number.isFinite(center) && width >= 1;
  if (!Number.isFinite(slope) || !Number.isFinite(intercept) || slope === 0)
    return fail('invalid-header', `Rescale Slope/Intercept ${slope}/${intercept}`);

  const out: Float32Array[] = [];
  const modality: Float32Array[] = [];
  const n = rows * cols;
  for (const rf of rawFrames) {
    const samples = readSamples(
      rf.bytes,
      frameSamples,
      bps,
      rf.littleEndian,
      signed && spp === 1,
      bitsStored,
    );
    const unit = new Float32Array(n);
    if (spp === 3) {
      const max = 2 ** bitsStored - 1 || 1;
      const ybr = !rf.rgbFromCodec && photometric.startsWith('YBR');
      for (let i = 0; i < n; i++) {
        const [a, b, c] = rf.planar
          ? [samples[i]!, samples[n + i]!, samples[2 * n + i]!]
          : [samples[3 * i]!, samples[3 * i + 1]!, samples[3 * i + 2]!];
        // YBR: the first component is already luma.
        unit[i] = (ybr ? a : 0.299 * a + 0.587 * b + 0.114 * c) / max;
      }
    } else {
      const values = samples;
      if (slope !== 1 || intercept !== 0)
        for (let i = 0; i < n; i++) values[i] = values[i]! * slope + intercept;
      if (opts.withModalityValues) modality.push(Float32Array.from(values));
      if (hasWindow) {
        // PS3.3 C.11.2.1.2.1, linear VOI LUT function, output range [0, 1].
        const lo = center - 0.5 - (width - 1) / 2;
        const hi = center - 0.5 + (width - 1) / 2;
        for (let i = 0; i < n; i++) {
          const x = values[i]!;
          unit[i] = x <= lo ? 0 : x > hi ? 1 : (x - (center - 0.5)) / (width - 1) + 0.5;
        }
      } else {
        let min = Infinity;
        let max = -Infinity;
        for (let i = 0; i < n; i++) {
          const x = values[i]!;
          if (x < min) min = x;
          if (x > max) max = x;
        }
        const range = max - min;
        for (let i = 0; i < n; i++) unit[i] = range > 0 ? (values[i]! - min) / range : 0;
      }
      if (photometric === 'MONOCHROME1') for (let i = 0; i < n; i++) unit[i] = 1 - unit[i]!;
    }
    out.push(unit);
  }
  return {
    ok: true,
    width: cols,
    height: rows,
    bitsStored,
    frames: out,
    ...(opts.withModalityValues ? { modalityValues: modality } : {}),
    meta,
  };
}

/** Stored samples → numbers: byte order, sign, and only the Bits Stored low bits (PS3.5 8.1.1). */
function readSamples(
  bytes: Uint8Array,
  count: number,
  bps: number,
  littleEndian: boolean,
  signed: boolean,
  bitsStored: number,
): Float32Array {
  const out = new Float32Array(count);
  const shift = 32 - bitsStored;
  const mask = bitsStored >= 32 ? 0xffffffff : 2 ** bitsStored - 1;
  for (let i = 0; i < count; i++) {
    let v: number;
    if (bps === 1) v = bytes[i]!;
    else {
      const b0 = bytes[2 * i]!;
      const b1 = bytes[2 * i + 1]!;
      v = littleEndian ? b0 | (b1 << 8) : (b0 << 8) | b1;
    }
    out[i] = signed ? (v << shift) >> shift : v & mask;
  }
  return out;
}

async function decodeFrame(
  syntax: string,
  encoded: Uint8Array,
  cols: number,
  rows: number,
  spp: number,
  bps: number,
): Promise<{ bytes: Uint8Array; rgb: boolean } | { error: string }> {
  if (syntax === '1.2.840.10008.1.2.5') {
    try {
      return { bytes: decodeRle(encoded, cols, rows, spp, bps), rgb: false };
    } catch (e) {
      return { error: (e as Error).message };
    }
  }
  let frame: CodecFrame;
  try {
    if (syntax === '1.2.840.10008.1.2.4.80' || syntax === '1.2.840.10008.1.2.4.81')
      frame = await decodeJpegLs(encoded);
    else if (syntax === '1.2.840.10008.1.2.4.90' || syntax === '1.2.840.10008.1.2.4.91')
      frame = await decodeJpeg2000(encoded);
    else if (syntax === '1.2.840.10008.1.2.4.57' || syntax === '1.2.840.10008.1.2.4.70')
      frame = decodeJpegLossless(encoded, bps as 1 | 2);
    else frame = await decodeJpegBaseline(encoded);
  } catch (e) {
    return { error: (e as Error).message ?? String(e) };
  }
  const expected = cols * rows * spp * bps;
  if (frame.width !== cols || frame.height !== rows || frame.components !== spp)
    return {
      error: `codestream is ${frame.width} × ${frame.height} × ${frame.components}, header says ${cols} × ${rows} × ${spp}`,
    };
  if (frame.bytes.length < expected)
    return { error: `decoded ${frame.bytes.length} bytes, expected ${expected}` };
  // Codecs decode colour to RGB (JPEG's YCbCr and JPEG 2000's RCT/ICT are undone).
  return { bytes: frame.bytes.subarray(0, expected), rgb: spp === 3 };
}
