import { z } from 'zod';
import { FedsslError } from '../errors';
import { createSha256, sha256Hex } from '../crypto/hash';
import { decodeElements, encodeElements, int8Scale } from './element-codec';
import {
  DTYPE_BYTES,
  type DType,
  type NamedTensors,
  type TensorSpec,
  type WeightManifest,
  type WeightManifestTensor,
} from './types';

/**
 * Weights ↔ bytes. Layout of format `fedssl-weights/1`:
 *
 *   "FSW1" (4) ‖ u32le manifestLength ‖ manifest JSON (UTF-8) ‖ zero pad to 8 ‖ data section
 *
 * The data section holds each tensor little-endian at an 8-aligned offset, zero-padded to
 * the next multiple of 8. The layout is canonical (one encoding per tensor list and dtype),
 * so the SHA-256 of the bytes identifies a model version. Tensors are float32 unless the
 * encoder is asked for float16 or int8 (update deltas); an int8 entry carries its `scale`.
 */

export const WEIGHTS_FORMAT = 'fedssl-weights/1' as const;
export const WEIGHTS_MAGIC = 'FSW1';
export const MAX_TENSOR_NAME_LENGTH = 256;
export const MAX_TENSOR_RANK = 8;
/** A manifest this large would describe millions of tensors; refuse before parsing it. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

const HEADER_BYTES = 8;
const MAGIC_BYTES = new TextEncoder().encode(WEIGHTS_MAGIC);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const align8 = (n: number): number => Math.ceil(n / 8) * 8;

function malformed(message: string, details?: Record<string, unknown>): FedsslError {
  return new FedsslError('CODEC_MALFORMED', `weights: ${message}`, details);
}

function shapeString(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Element count of `shape`, or -1 if it exceeds 2^53 (caller treats that as malformed). */
function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return -1;
  }
  return n;
}

function checkName(name: unknown, index: number, seen: Set<string>): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_TENSOR_NAME_LENGTH) {
    throw malformed(`tensor #${index} name must be 1..${MAX_TENSOR_NAME_LENGTH} characters`);
  }
  if (seen.has(name)) throw malformed(`duplicate tensor name "${name}" at #${index}`);
  seen.add(name);
  return name;
}

function checkShape(shape: unknown, where: string): number[] {
  if (
    !Array.isArray(shape) ||
    shape.length > MAX_TENSOR_RANK ||
    !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)
  ) {
    throw malformed(`${where} shape must be at most ${MAX_TENSOR_RANK} non-negative integers`);
  }
  return shape as number[];
}

// ---------------------------------------------------------------- encode

export interface EncodeOptions {
  /** Element type every tensor is stored as (default float32, exact). */
  dtype?: DType;
}

/**
 * Encode ordered float32 tensors into the self-describing `fedssl-weights/1` format.
 * @throws FedsslError CODEC_MALFORMED for an empty/long/duplicate name, a bad shape, a
 *   shape whose element count differs from the data length, or a value `dtype` cannot carry.
 * @example const bytes = encodeWeights([{ name: 'fc/kernel', shape: [2, 3], data: new Float32Array(6) }]);
 * @example const compact = encodeWeights(delta, { dtype: 'int8' });
 */
export function encodeWeights(tensors: NamedTensors, options: EncodeOptions = {}): Uint8Array {
  const dtype = options.dtype ?? 'float32';
  if (!(dtype in DTYPE_BYTES)) {
    throw new FedsslError('CODEC_UNSUPPORTED_DTYPE', `weights: cannot encode dtype "${String(dtype)}"`);
  }
  const seen = new Set<string>();
  const entries: WeightManifestTensor[] = [];
  let end = 0;
  tensors.forEach((t, i) => {
    const name = checkName(t.name, i, seen);
    const shape = checkShape(t.shape, `tensor "${name}"`);
    if (!(t.data instanceof Float32Array)) throw malformed(`tensor "${name}" data must be a Float32Array`);
    const n = elementCount(shape);
    if (n !== t.data.length) {
      throw malformed(
        `tensor "${name}" shape ${shapeString(shape)} has ${n} elements but data has ${t.data.length}`,
      );
    }
    const offset = align8(end);
    const byteLength = n * DTYPE_BYTES[dtype];
    const entry: WeightManifestTensor = { name, shape: [...shape], dtype, offset, byteLength };
    // The scale goes in the manifest, whose length must be known before the data is written.
    if (dtype === 'int8') entry.scale = int8Scale(name, t.data);
    entries.push(entry);
    end = offset + byteLength;
  });
  const dataLength = align8(end);

  // The hash has a fixed width, so the manifest's length is known before the data is
  // hashed: lay out once, write the data in place, then write the real manifest.
  const manifestFor = (hash: string): Uint8Array =>
    new TextEncoder().encode(JSON.stringify({ format: WEIGHTS_FORMAT, tensors: entries, dataSha256: hash }));
  const manifestLength = manifestFor('0'.repeat(64)).length;
  const dataStart = align8(HEADER_BYTES + manifestLength);
  const out = new Uint8Array(dataStart + dataLength);

  tensors.forEach((t, i) => {
    const entry = entries[i] as WeightManifestTensor;
    const at = dataStart + entry.offset;
    if (dtype !== 'float32') {
      encodeElements(entry.name, t.data, dtype, out.subarray(at, at + entry.byteLength), entry.scale ?? 0);
    } else if (LITTLE_ENDIAN) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    } else {
      const dv = new DataView(out.buffer, at, t.data.byteLength);
      for (let j = 0; j < t.data.length; j++) dv.setFloat32(j * 4, t.data[j] as number, true);
    }
  });
  const manifest = manifestFor(sha256Hex(out.subarray(dataStart)));
  out.set(MAGIC_BYTES, 0);
  new DataView(out.buffer).setUint32(4, manifestLength, true);
  out.set(manifest, HEADER_BYTES);
  return out;
}

// ---------------------------------------------------------------- decode

const manifestSchema = z
  .object({
    format: z.string(),
    tensors: z.array(
      z
        .object({
          name: z.string(),
          shape: z.array(z.number()),
          dtype: z.string(),
          offset: z.number().int().min(0),
          byteLength: z.number().int().min(0),
          scale: z.number().optional(),
        })
        .strict(),
    ),
    dataSha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected SHA-256 hex'),
  })
  .strict();

export interface DecodedWeights {
  manifest: WeightManifest;
  tensors: NamedTensors;
}

/**
 * Read and validate only the header and manifest (no tensor data is copied).
 * @throws FedsslError CODEC_MALFORMED / CODEC_UNSUPPORTED_DTYPE.
 */
export function readWeightManifest(bytes: Uint8Array): { manifest: WeightManifest; dataStart: number } {
  if (!(bytes instanceof Uint8Array)) throw malformed('expected a Uint8Array');
  if (bytes.length < HEADER_BYTES)
    throw malformed(`truncated: ${bytes.length} bytes, the header alone is ${HEADER_BYTES}`);
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== MAGIC_BYTES[i]) throw malformed(`bad magic: expected "${WEIGHTS_MAGIC}"`);
  }
  const manifestLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (manifestLength > MAX_MANIFEST_BYTES) {
    throw malformed(`manifest length ${manifestLength} exceeds the limit of ${MAX_MANIFEST_BYTES}`);
  }
  if (HEADER_BYTES + manifestLength > bytes.length) {
    throw malformed(
      `truncated: manifest length ${manifestLength} exceeds the ${bytes.length - HEADER_BYTES} bytes after the header`,
    );
  }
  let json: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(
      bytes.subarray(HEADER_BYTES, HEADER_BYTES + manifestLength),
    );
    json = JSON.parse(text);
  } catch {
    throw malformed('manifest is not UTF-8 JSON');
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const path = first?.path.map(String).join('.') || '(root)';
    throw malformed(`manifest does not match ${WEIGHTS_FORMAT} at ${path}: ${first?.message ?? 'invalid'}`);
  }
  const m = parsed.data;
  if (m.format !== WEIGHTS_FORMAT)
    throw malformed(`unsupported format "${m.format.slice(0, 64)}", expected "${WEIGHTS_FORMAT}"`);

  const dataStart = align8(HEADER_BYTES + manifestLength);
  if (dataStart > bytes.length) throw malformed('truncated: missing padding after the manifest');
  for (let i = HEADER_BYTES + manifestLength; i < dataStart; i++) {
    if (bytes[i] !== 0) throw malformed('non-zero padding after the manifest');
  }
  const dataLength = bytes.length - dataStart;

  const seen = new Set<string>();
  let prevEnd = 0;
  let prevName: string | null = null;
  m.tensors.forEach((t, i) => {
    const name = checkName(t.name, i, seen);
    const shape = checkShape(t.shape, `tensor "${name}"`);
    if (!(t.dtype in DTYPE_BYTES)) {
      throw new FedsslError(
        'CODEC_UNSUPPORTED_DTYPE',
        `weights: tensor "${name}" has unsupported dtype "${t.dtype.slice(0, 32)}"`,
      );
    }
    const n = elementCount(shape);
    const width = DTYPE_BYTES[t.dtype as DType];
    if (n < 0 || n * width !== t.byteLength) {
      throw malformed(
        `tensor "${name}" byteLength ${t.byteLength} does not match shape ${shapeString(shape)} × ${width} bytes`,
      );
    }
    if (t.dtype === 'int8') {
      const sc = t.scale;
      if (sc === undefined || !(sc >= 0) || !Number.isFinite(sc) || Math.fround(sc) !== sc) {
        throw malformed(`tensor "${name}" is int8 but has no finite, non-negative float32 scale`);
      }
    } else if (t.scale !== undefined) {
      throw malformed(`tensor "${name}" has a scale, which only int8 tensors carry`);
    }
    if (t.offset % 8 !== 0) throw malformed(`tensor "${name}" offset ${t.offset} is not 8-aligned`);
    if (t.offset + t.byteLength > dataLength) {
      throw malformed(
        `tensor "${name}" (offset ${t.offset}, ${t.byteLength} bytes) is out of range of the ${dataLength}-byte data section`,
      );
    }
    if (t.offset < prevEnd) throw malformed(`tensor "${name}" overlaps tensor "${prevName ?? ''}"`);
    if (t.offset !== align8(prevEnd)) throw malformed(`unexpected gap before tensor "${name}"`);
    prevEnd = t.offset + t.byteLength;
    prevName = name;
  });
  if (dataLength !== align8(prevEnd)) {
    throw malformed(`data section is ${dataLength} bytes, the manifest describes ${align8(prevEnd)}`);
  }
  return { manifest: m as WeightManifest, dataStart };
}

export interface DecodeOptions {
  /**
   * false: float32 tensors may be views into `bytes` (when aligned and little-endian)
   * instead of copies — for a caller that owns `bytes` and drops it after use (the
   * coordinator's ingest). Default true.
   */
  copy?: boolean;
}

/**
 * Decode `fedssl-weights/1` bytes strictly, every dtype to float32. With `expect`, the
 * names, shapes and order must match exactly. Returned tensors own their memory (copies,
 * never unaligned views) unless `options.copy` is false.
 * @throws FedsslError CODEC_MALFORMED, CODEC_UNSUPPORTED_DTYPE, CODEC_HASH_MISMATCH,
 *   MODEL_WEIGHTS_MISMATCH (with `expect`, naming the first offending tensor).
 */
export function decodeWeights(
  bytes: Uint8Array,
  expect?: readonly TensorSpec[],
  options: DecodeOptions = {},
): DecodedWeights {
  const { manifest, dataStart } = readWeightManifest(bytes);
  const data = bytes.subarray(dataStart);
  // Padding must be zero so that the encoding stays canonical (one byte string per model).
  let end = 0;
  for (const t of [...manifest.tensors, { name: '(end)', offset: data.length, byteLength: 0 }]) {
    for (let i = end; i < t.offset; i++) {
      if (data[i] !== 0) throw malformed(`non-zero padding before tensor "${t.name}"`);
    }
    end = t.offset + t.byteLength;
  }
  if (expect) checkExpected(manifest, expect);
  // Padding between tensors is covered by the hash; the hash is integrity, not authenticity
  // (signatures over the whole file's SHA-256 provide that).
  if (sha256Hex(data) !== manifest.dataSha256) {
    throw new FedsslError('CODEC_HASH_MISMATCH', 'weights: data section SHA-256 does not match the manifest');
  }
  const tensors: NamedTensors = manifest.tensors.map((t) => {
    const src = data.subarray(t.offset, t.offset + t.byteLength);
    if (t.dtype !== 'float32') {
      return { name: t.name, shape: [...t.shape], data: decodeElements(t.name, src, t.dtype, t.scale ?? 0) };
    }
    if (options.copy === false && LITTLE_ENDIAN && src.byteOffset % 4 === 0) {
      return {
        name: t.name,
        shape: [...t.shape],
        data: new Float32Array(src.buffer, src.byteOffset, t.byteLength / 4),
      };
    }
    const out = new Float32Array(t.byteLength / 4);
    if (LITTLE_ENDIAN) {
      new Uint8Array(out.buffer).set(src);
    } else {
      const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
      for (let j = 0; j < out.length; j++) out[j] = dv.getFloat32(j * 4, true);
    }
    return { name: t.name, shape: [...t.shape], data: out };
  });
  return { manifest, tensors };
}

function checkExpected(manifest: WeightManifest, expect: readonly TensorSpec[]): void {
  const got = manifest.tensors;
  const n = Math.max(got.length, expect.length);
  for (let i = 0; i < n; i++) {
    const g = got[i];
    const e = expect[i];
    if (e === undefined) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `unexpected tensor #${i} "${g?.name ?? ''}": expected ${expect.length} tensors, got ${got.length}`,
      );
    }
    if (g === undefined) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `missing tensor #${i} "${e.name}": expected ${expect.length} tensors, got ${got.length}`,
      );
    }
    if (g.name !== e.name || shapeString(g.shape) !== shapeString(e.shape)) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `tensor #${i}: expected "${e.name}" ${shapeString(e.shape)}, got "${g.name}" ${shapeString(g.shape)}`,
        { index: i, expected: e.name, got: g.name },
      );
    }
  }
}

/** SHA-256 hex of encoded weight bytes (what model manifests and tasks carry). */
export function weightsSha256(bytes: Uint8Array): string {
  return sha256Hex(bytes);
}

/** Incremental SHA-256 for weight bytes arriving in chunks. */
export const createWeightsHasher = createSha256;

/** Names and shapes of `tensors`, for `decodeWeights(bytes, expect)`. */
export function tensorSpecs(tensors: NamedTensors): TensorSpec[] {
  return tensors.map((t) => ({ name: t.name, shape: [...t.shape] }));
}
