import { FedsslError } from '../errors';
import type { DType } from './types';

/**
 * float32 ↔ the compact element types of update deltas (float16, int8 with a per-tensor
 * scale). Pure functions over typed arrays; the weight format (weights.ts) places the
 * results. Encoding is deterministic, so one delta has one byte string.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE binary16 bits of `v`, round to nearest, ties to even; NaN stays NaN, ±∞ stays ±∞. */
export function float16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: m · 2^-24 with m = (1.mant) >> (14 − e); below 2^-25 everything rounds to 0.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, up to ∞: still correct rounding.
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** The float value of binary16 bits `h`. */
export function float16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

let halfTable: Float32Array | null = null;

/** All 65 536 half values, built once: decoding is then one lookup per element. */
function float16Table(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = float16Value(h);
  }
  return halfTable;
}

function malformed(message: string): FedsslError {
  return new FedsslError('CODEC_MALFORMED', `weights: ${message}`);
}

/** Largest finite half; finite float32 values that round past it are refused, not made ∞. */
export const FLOAT16_MAX = 65504;

/**
 * The int8 step of a tensor: max |x| / 127 rounded to float32 (0 for an all-zero tensor).
 * @throws FedsslError CODEC_MALFORMED for a non-finite value, which int8 cannot carry.
 */
export function int8Scale(name: string, data: Float32Array): number {
  let max = 0;
  for (let i = 0; i < data.length; i++) {
    const a = Math.abs(data[i]!);
    if (!(a <= max)) {
      if (a === Infinity || Number.isNaN(a)) {
        throw malformed(`tensor "${name}" has a non-finite value, which int8 cannot carry`);
      }
      max = a;
    }
  }
  return Math.fround(max / 127);
}

/**
 * Write `data` as `dtype` little-endian into `out` (exactly the tensor's bytes); int8 uses
 * `scale` from {@link int8Scale}.
 * @throws FedsslError CODEC_MALFORMED for a finite value past the float16 range.
 */
export function encodeElements(
  name: string,
  data: Float32Array,
  dtype: Exclude<DType, 'float32'>,
  out: Uint8Array,
  scale: number,
): void {
  if (dtype === 'float16') {
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      const h = float16Bits(v);
      if ((h & 0x7fff) === 0x7c00 && Number.isFinite(v)) {
        throw malformed(`tensor "${name}" value ${v} is outside the float16 range ±${FLOAT16_MAX}`);
      }
      dv.setUint16(i * 2, h, true);
    }
    return;
  }
  // Scale 0: all zeros, or values so small the step underflows; q stays 0 (out is zeroed).
  if (scale === 0) return;
  for (let i = 0; i < data.length; i++) {
    const q = Math.round(data[i]! / scale);
    out[i] = (q > 127 ? 127 : q < -127 ? -127 : q) & 0xff;
  }
}

/**
 * Read `src` (a tensor's bytes as `dtype`, any alignment) into a new float32 array.
 * @throws FedsslError CODEC_MALFORMED for a non-canonical int8 value (-128, or non-zero at scale 0).
 */
export function decodeElements(
  name: string,
  src: Uint8Array,
  dtype: Exclude<DType, 'float32'>,
  scale: number,
): Float32Array {
  if (dtype === 'float16') {
    const table = float16Table();
    const out = new Float32Array(src.length / 2);
    const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = table[dv.getUint16(i * 2, true)]!;
    return out;
  }
  const q = new Int8Array(src.buffer, src.byteOffset, src.byteLength);
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) {
    const v = q[i]!;
    if (v === -128) throw malformed(`tensor "${name}" holds int8 -128, outside the symmetric range`);
    if (scale === 0 && v !== 0) throw malformed(`tensor "${name}" has scale 0 but a non-zero value`);
    out[i] = v * scale;
  }
  return out;
}
