import { FedsslError } from '../errors';
import { RING } from './ring';

const MAGIC = 0x46534131; // "FSA1"

/**
 * A masked input as update-envelope plaintext: u32be magic "FSA1" ‖ u32be length ‖ 6-byte
 * little-endian ring elements.
 */
export function encodeMaskedInput(masked: Float64Array): Uint8Array {
  const out = Buffer.alloc(8 + masked.length * 6);
  out.writeUInt32BE(MAGIC, 0);
  out.writeUInt32BE(masked.length, 4);
  for (let i = 0; i < masked.length; i++) out.writeUIntLE(masked[i]!, 8 + i * 6, 6);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Reads {@link encodeMaskedInput} bytes back.
 * @throws FedsslError CODEC_MALFORMED on a wrong magic, length or dimension.
 */
export function decodeMaskedInput(bytes: Uint8Array, dimension: number): Float64Array {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 8 || buf.readUInt32BE(0) !== MAGIC)
    throw new FedsslError('CODEC_MALFORMED', 'not a masked secure-aggregation input');
  const n = buf.readUInt32BE(4);
  if (n !== dimension || buf.length !== 8 + n * 6)
    throw new FedsslError(
      'CODEC_MALFORMED',
      `masked input has ${n} values in ${buf.length} bytes; expected ${dimension}`,
    );
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readUIntLE(8 + i * 6, 6);
  return out;
}

/** Every element an integer in [0, 2^48): what a valid masked input looks like. */
export function isRingVector(v: Float64Array): boolean {
  return v.every((x) => Number.isInteger(x) && x >= 0 && x < RING);
}
