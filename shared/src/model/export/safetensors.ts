import { FedsslError } from '../../errors';

/**
 * safetensors (https://github.com/huggingface/safetensors), float32 only:
 *
 *   u64le N ‖ N bytes of UTF-8 JSON header ‖ data
 *
 * header = { "__metadata__": {string: string}, "<name>": { "dtype": "F32", "shape": [...],
 * "data_offsets": [begin, end] } } with offsets relative to the start of the data, tensors
 * stored contiguously, little-endian, in the order given. The header is padded with spaces
 * to a multiple of 8 bytes (allowed by the format) so that the data is 8-aligned.
 */

export interface SafetensorsTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: SafetensorsTensor[];
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Header size limit of the reference implementation (100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

function malformed(message: string): FedsslError {
  return new FedsslError('CODEC_MALFORMED', `safetensors: ${message}`);
}

/**
 * Encodes float32 tensors (row-major) and string metadata as a safetensors file.
 * @throws FedsslError CODEC_MALFORMED for a duplicate or reserved name, or a shape that
 *   does not match the data length.
 * @example const bytes = encodeSafetensors([{ name: 'fc.weight', shape: [2, 3], data }], { format: 'pt' });
 */
export function encodeSafetensors(
  tensors: readonly SafetensorsTensor[],
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { ...metadata } };
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) {
      throw malformed(`duplicate or reserved tensor name "${t.name}"`);
    }
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw malformed(
        `tensor "${t.name}" shape [${t.shape.join(',')}] has ${n} elements, data has ${t.data.length}`,
      );
    }
    header[t.name] = {
      dtype: 'F32',
      shape: t.shape.slice(),
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of tensors) {
    if (LITTLE_ENDIAN) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    } else {
      for (let i = 0; i < t.data.length; i++) dv.setFloat32(at + i * 4, t.data[i]!, true);
    }
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Parses a float32 safetensors file strictly (header bounds, offsets contiguous and in
 * range, F32 only). Tensors come back in data order.
 * @throws FedsslError CODEC_MALFORMED, CODEC_UNSUPPORTED_DTYPE.
 */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (bytes.length < 8) throw malformed(`truncated: ${bytes.length} bytes`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES || 8 + n > bytes.length) throw malformed(`header length ${n} is out of range`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n))) as Record<
      string,
      unknown
    >;
  } catch {
    throw malformed('header is not UTF-8 JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw malformed('header is not an object');
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      for (const [k, v] of Object.entries((value ?? {}) as Record<string, unknown>)) {
        if (typeof v !== 'string') throw malformed(`metadata "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e.dtype !== 'F32') {
      throw new FedsslError(
        'CODEC_UNSUPPORTED_DTYPE',
        `safetensors: tensor "${name}" has dtype ${String(e.dtype)}, only F32 is read`,
      );
    }
    const shape = e.shape;
    const offsets = e.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw malformed(`tensor "${name}" has a bad shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o)))
      throw malformed(`tensor "${name}" has bad data_offsets`);
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (begin < 0 || end > dataLength || end - begin !== count * 4)
      throw malformed(`tensor "${name}" data_offsets [${begin}, ${end}] do not fit its shape or the file`);
    entries.push({ name, shape: shape as number[], begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin);
  let expected = 0;
  for (const e of entries) {
    if (e.begin !== expected)
      throw malformed(`tensor "${e.name}" does not start where the previous one ends`);
    expected = e.end;
  }
  if (expected !== dataLength)
    throw malformed(`data is ${dataLength} bytes, the header describes ${expected}`);
  const tensors = entries.map((e) => {
    const data = new Float32Array((e.end - e.begin) / 4);
    for (let i = 0; i < data.length; i++) data[i] = dv.getFloat32(dataStart + e.begin + i * 4, true);
    return { name: e.name, shape: e.shape, data };
  });
  return { metadata, tensors };
}
