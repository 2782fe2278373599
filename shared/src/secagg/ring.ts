import { createCipheriv } from 'node:crypto';
import { FedsslError } from '../errors';

/**
 * Arithmetic in Z_{2^48}, held in float64: every element is an integer in [0, 2^48) and the sum
 * of two is below 2^49 < 2^53, so additions are exact and one conditional subtraction reduces
 * them. 48 bits leave room for 24 fractional bits and a range of ±2^23 for the whole sum.
 */
export const RING_BITS = 48;
export const RING = 2 ** RING_BITS;
const HALF = 2 ** (RING_BITS - 1);

/** Default fixed-point scale: 2^24, i.e. a resolution of 6e-8. */
export const DEFAULT_FRACTION_BITS = 24;

/**
 * Largest magnitude one party may contribute per coordinate so that the sum of `parties`
 * contributions cannot wrap: |Σ xᵢ| < 2^47 / 2^fractionBits.
 */
export function maxAbsInput(parties: number, fractionBits = DEFAULT_FRACTION_BITS): number {
  return Math.floor((HALF - 1) / parties) / 2 ** fractionBits;
}

/**
 * Fixed-point encoding of one party's input into the ring: round(x·2^f) mod 2^48.
 * @throws FedsslError SECAGG_OVERFLOW if a value is not finite or |x| exceeds
 *   {@link maxAbsInput}(parties), which would let the sum wrap (detected here, on the site,
 *   since the coordinator cannot see single values).
 */
export function encodeFixed(
  values: ArrayLike<number>,
  parties: number,
  fractionBits = DEFAULT_FRACTION_BITS,
): Float64Array {
  const scale = 2 ** fractionBits;
  const limit = Math.floor((HALF - 1) / parties);
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const q = Math.round(values[i]! * scale);
    if (!(Math.abs(q) <= limit)) {
      throw new FedsslError(
        'SECAGG_OVERFLOW',
        `value at ${i} is outside the fixed-point range ±${maxAbsInput(parties, fractionBits)} for ${parties} parties`,
      );
    }
    out[i] = q < 0 ? q + RING : q;
  }
  return out;
}

/** Reads a ring element sum back as a signed real: values ≥ 2^47 are negative. */
export function decodeFixed(sum: Float64Array, fractionBits = DEFAULT_FRACTION_BITS): Float64Array {
  const scale = 2 ** fractionBits;
  const out = new Float64Array(sum.length);
  for (let i = 0; i < sum.length; i++) out[i] = (sum[i]! >= HALF ? sum[i]! - RING : sum[i]!) / scale;
  return out;
}

/** target += other (mod 2^48), in place. */
export function addInto(target: Float64Array, other: Float64Array): void {
  for (let i = 0; i < target.length; i++) {
    const s = target[i]! + other[i]!;
    target[i] = s >= RING ? s - RING : s;
  }
}

const BLOCK_VALUES = 8192;

/**
 * Adds (sign +1) or subtracts (sign −1) the mask expanded from a 32-byte seed, in place:
 * mask = ChaCha20 keystream under the seed (zero nonce; a seed is used for one mask only),
 * read as 6-byte little-endian integers, i.e. uniform in Z_{2^48}. Streams in blocks, so
 * memory stays O(block) above the target.
 */
export function applyMask(target: Float64Array, seed: Uint8Array, sign: 1 | -1): void {
  if (seed.length !== 32)
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `expected Uint8Array of length 32, got length=${seed.length}`,
    );
  const cipher = createCipheriv('chacha20', seed, Buffer.alloc(16));
  const zeros = Buffer.alloc(BLOCK_VALUES * 6);
  for (let start = 0; start < target.length; start += BLOCK_VALUES) {
    const n = Math.min(BLOCK_VALUES, target.length - start);
    const ks = cipher.update(n === BLOCK_VALUES ? zeros : zeros.subarray(0, n * 6));
    for (let k = 0; k < n; k++) {
      const m = ks.readUIntLE(k * 6, 6);
      const i = start + k;
      let v = sign === 1 ? target[i]! + m : target[i]! - m;
      if (v >= RING) v -= RING;
      else if (v < 0) v += RING;
      target[i] = v;
    }
  }
}
