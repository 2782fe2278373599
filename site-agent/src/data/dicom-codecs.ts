import { createRequire } from 'node:module';

/**
 * Decoders for compressed DICOM transfer syntaxes: the cornerstone WebAssembly builds of
 * CharLS (JPEG-LS), OpenJPEG (JPEG 2000) and libjpeg-turbo (8-bit baseline JPEG), the
 * jpeg-lossless-decoder-js package (JPEG lossless, process 14) and RLE Lossless by hand.
 *
 * Each decoder returns the frame's samples as little-endian bytes, pixel-interleaved
 * (R G B R G B … for colour), `bytesPerSample` bytes per sample — the layout of native
 * little-endian pixel data with planar configuration 0.
 *
 * The packages ship no type declarations, so they are loaded through `require` with the
 * small shapes used here. WebAssembly modules are instantiated once, on first use.
 */

const load = createRequire(__filename);

/** The embind decoder classes of the cornerstone codec packages share one shape. */
interface WasmDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  decode(): void;
  getDecodedBuffer(): Uint8Array;
  getFrameInfo(): {
    width: number;
    height: number;
    bitsPerSample: number;
    componentCount: number;
    isSigned?: boolean;
  };
  delete(): void;
}
type WasmFactory = (opts: {
  print: () => void;
  printErr: () => void;
}) => Promise<Record<string, new () => WasmDecoder>>;

const modules = new Map<string, Promise<Record<string, new () => WasmDecoder>>>();

function wasmModule(pkg: string): Promise<Record<string, new () => WasmDecoder>> {
  let m = modules.get(pkg);
  if (!m) {
    const factory = load(pkg) as WasmFactory;
    // print/printErr silenced: a corrupt codestream would otherwise write to stderr.
    m = factory({ print: () => undefined, printErr: () => undefined });
    modules.set(pkg, m);
  }
  return m;
}

/** A decoded frame from a codec, before DICOM sample interpretation. */
export interface CodecFrame {
  bytes: Uint8Array;
  width: number;
  height: number;
  components: number;
  bitsPerSample: number;
}

async function decodeWithWasm(pkg: string, cls: string, encoded: Uint8Array): Promise<CodecFrame> {
  const mod = await wasmModule(pkg);
  const Ctor = mod[cls];
  if (!Ctor) throw new Error(`${pkg} has no ${cls}`);
  const decoder = new Ctor();
  try {
    decoder.getEncodedBuffer(encoded.length).set(encoded);
    decoder.decode();
    const info = decoder.getFrameInfo();
    // Copy out: the view points into WebAssembly memory, freed by delete().
    const bytes = new Uint8Array(decoder.getDecodedBuffer());
    return {
      bytes,
      width: info.width,
      height: info.height,
      components: info.componentCount,
      bitsPerSample: info.bitsPerSample,
    };
  } catch (e) {
    // embind throws numbers (C++ exception pointers) for codec errors.
    throw new Error(
      typeof e === 'number' ? `${cls} failed on a corrupt or unsupported codestream` : String(e),
    );
  } finally {
    decoder.delete();
  }
}

/** JPEG-LS (lossless and near-lossless). */
export function decodeJpegLs(encoded: Uint8Array): Promise<CodecFrame> {
  return decodeWithWasm('@cornerstonejs/codec-charls/decodewasmjs', 'JpegLSDecoder', encoded);
}

/** JPEG 2000 (lossless and lossy). */
export function decodeJpeg2000(encoded: Uint8Array): Promise<CodecFrame> {
  return decodeWithWasm('@cornerstonejs/codec-openjpeg/decodewasmjs', 'J2KDecoder', encoded);
}

/** Baseline 8-bit JPEG; colour comes out as RGB. */
export function decodeJpegBaseline(encoded: Uint8Array): Promise<CodecFrame> {
  return decodeWithWasm('@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs', 'JPEGDecoder', encoded);
}

interface LosslessDecoder {
  decode(buffer: ArrayBuffer, offset: number, length: number, numBytes: number): Uint8Array | Uint16Array;
  frame: { dimX: number; dimY: number; numComp: number; precision: number };
}

/** JPEG lossless, non-hierarchical (process 14, any selection value). */
export function decodeJpegLossless(encoded: Uint8Array, bytesPerSample: 1 | 2): CodecFrame {
  const { Decoder } = load('jpeg-lossless-decoder-js') as { Decoder: new () => LosslessDecoder };
  const d = new Decoder();
  const copy = encoded.slice();
  const out = d.decode(copy.buffer, 0, copy.length, bytesPerSample);
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength).slice();
  return {
    bytes,
    width: d.frame.dimX,
    height: d.frame.dimY,
    components: d.frame.numComp,
    bitsPerSample: d.frame.precision,
  };
}

/**
 * RLE Lossless (PS3.5 annex G): a 64-byte header with the segment count and offsets, then
 * one PackBits segment per byte plane — for each sample, its most significant byte first.
 * @throws Error on a malformed header or segments that do not fill the frame.
 */
export function decodeRle(
  encoded: Uint8Array,
  width: number,
  height: number,
  samplesPerPixel: number,
  bytesPerSample: number,
): Uint8Array {
  if (encoded.length < 64) throw new Error('RLE frame shorter than its 64-byte header');
  const view = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  const segments = view.getUint32(0, true);
  const expected = samplesPerPixel * bytesPerSample;
  if (segments !== expected)
    throw new Error(`RLE frame has ${segments} segments, expected ${expected} for this pixel layout`);
  const offsets: number[] = [];
  for (let s = 0; s < segments; s++) offsets.push(view.getUint32(4 + 4 * s, true));
  const pixels = width * height;
  const out = new Uint8Array(pixels * expected);
  for (let s = 0; s < segments; s++) {
    const start = offsets[s]!;
    const end = s + 1 < segments ? offsets[s + 1]! : encoded.length;
    if (start < 64 || end > encoded.length || end < start)
      throw new Error('RLE segment offsets out of range');
    const sample = Math.floor(s / bytesPerSample);
    const byteInSample = bytesPerSample - 1 - (s % bytesPerSample); // MSB segment first → LE position
    const stride = expected;
    let o = sample * bytesPerSample + byteInSample;
    let filled = 0;
    let i = start;
    while (i < end && filled < pixels) {
      const n = (encoded[i++]! << 24) >> 24; // signed byte
      if (n >= 0) {
        for (let k = 0; k <= n && i < end && filled < pixels; k++, filled++, o += stride)
          out[o] = encoded[i++]!;
      } else if (n !== -128) {
        const v = encoded[i++]!;
        for (let k = 0; k < 1 - n && filled < pixels; k++, filled++, o += stride) out[o] = v;
      }
    }
    if (filled < pixels) throw new Error(`RLE segment ${s} decodes to ${filled} of ${pixels} bytes`);
  }
  return out;
}
