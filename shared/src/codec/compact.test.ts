import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFedsslError, type ErrorCode } from '../errors';
import { sha256Hex } from '../crypto/hash';
import { FLOAT16_MAX, float16Bits, float16Value } from './element-codec';
import type { NamedTensors, WeightManifest } from './types';
import { decodeWeights, encodeWeights, readWeightManifest, tensorSpecs } from './weights';

function thrown(fn: () => unknown): { code: ErrorCode | 'none' | 'foreign'; message: string } {
  try {
    fn();
    return { code: 'none', message: '' };
  } catch (e) {
    return isFedsslError(e) ? { code: e.code, message: e.message } : { code: 'foreign', message: String(e) };
  }
}

const delta: NamedTensors = [
  {
    name: 'conv/kernel',
    shape: [3, 3, 1, 4],
    data: Float32Array.from({ length: 36 }, (_, i) => (i - 17) * 3.1e-4),
  },
  { name: 'bn/gamma', shape: [4], data: new Float32Array([1e-3, -2e-3, 0, 5e-5]) },
  { name: 'zeros', shape: [3], data: new Float32Array(3) },
  { name: 'empty', shape: [0], data: new Float32Array(0) },
];

/**
 * A manifest whose tensor entries are loose records: cases write wrongly typed fields on
 * purpose (a string scale), which the decoder must refuse at runtime.
 */
type LooseManifest = Omit<WeightManifest, 'tensors'> & { tensors: Record<string, unknown>[] };

/** Re-assemble an encoded file after editing its manifest and/or data section. */
function rewrite(
  bytes: Uint8Array,
  edit: (m: LooseManifest, data: Uint8Array) => void,
  { rehash = true } = {},
): Uint8Array {
  const { manifest, dataStart } = readWeightManifest(bytes);
  const m: LooseManifest = { ...manifest, tensors: structuredClone(manifest.tensors).map((t) => ({ ...t })) };
  const data = Uint8Array.from(bytes.subarray(dataStart));
  edit(m, data);
  if (rehash) m.dataSha256 = sha256Hex(data);
  const text = new TextEncoder().encode(JSON.stringify(m));
  const start = Math.ceil((8 + text.length) / 8) * 8;
  const out = new Uint8Array(start + data.length);
  out.set(bytes.subarray(0, 4));
  new DataView(out.buffer).setUint32(4, text.length, true);
  out.set(text, 8);
  out.set(data, start);
  return out;
}

describe('float16 element conversion', () => {
  it('every non-NaN half survives half → float → half', () => {
    for (let h = 0; h < 65536; h++) {
      const v = float16Value(h);
      if (Number.isNaN(v)) {
        expect(Number.isNaN(float16Value(float16Bits(v)))).toBe(true);
        continue;
      }
      if (float16Bits(v) !== h)
        expect.fail(`half 0x${h.toString(16)} (${v}) came back as 0x${float16Bits(v).toString(16)}`);
    }
  });

  it('known answers', () => {
    expect(float16Bits(1)).toBe(0x3c00);
    expect(float16Bits(-2)).toBe(0xc000);
    expect(float16Bits(FLOAT16_MAX)).toBe(0x7bff);
    expect(float16Bits(0.1)).toBe(0x2e66);
    expect(float16Bits(-0)).toBe(0x8000);
    expect(float16Bits(2 ** -24)).toBe(0x0001);
    expect(float16Bits(2 ** -25)).toBe(0x0000); // tie → even (0)
    expect(float16Bits(3 * 2 ** -25)).toBe(0x0002); // tie 1.5 → even (2)
    expect(float16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even mantissa
    expect(float16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(float16Bits(65520)).toBe(0x7c00); // rounds past the largest half
    expect(float16Bits(Infinity)).toBe(0x7c00);
    expect(Number.isNaN(float16Value(float16Bits(NaN)))).toBe(true);
  });

  it('rounds every float32 to a nearest half, ties to even (fast-check)', () => {
    fc.assert(
      fc.property(fc.float({ min: -65504, max: 65504, noNaN: true }), (x) => {
        const h = float16Bits(x);
        const v = float16Value(h);
        const err = Math.abs(x - v);
        // Neighbours on the number line (same sign side, next magnitude up and down).
        for (const n of [h + 1, h - 1]) {
          if ((n & 0x7fff) >= 0x7c00 || n < 0 || (n & 0x7fff) === 0x7fff) continue;
          if (((n ^ h) & 0x8000) !== 0) continue;
          const d = Math.abs(x - float16Value(n));
          expect(d).toBeGreaterThanOrEqual(err);
          if (d === err) expect(h & 1).toBe(0);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('encodeWeights with a compact dtype', () => {
  it('float16: half the bytes, and each value within half a float16 step', () => {
    const bytes = encodeWeights(delta, { dtype: 'float16' });
    const { manifest, tensors } = decodeWeights(bytes, tensorSpecs(delta));
    expect(manifest.tensors.map((t) => [t.dtype, t.byteLength, 'scale' in t])).toEqual([
      ['float16', 72, false],
      ['float16', 8, false],
      ['float16', 6, false],
      ['float16', 0, false],
    ]);
    tensors.forEach((t, i) => {
      const src = delta[i]!.data;
      expect(t.data).toBeInstanceOf(Float32Array);
      for (let j = 0; j < src.length; j++) {
        const x = src[j]!;
        // Relative 2^-11 for normal halves, absolute 2^-25 in the subnormal range.
        expect(Math.abs(t.data[j]! - x)).toBeLessThanOrEqual(Math.max(Math.abs(x) * 2 ** -11, 2 ** -25));
      }
    });
  });

  it('int8: one byte per value, per-tensor scale max|x|/127 in the manifest, error ≤ scale/2', () => {
    const bytes = encodeWeights(delta, { dtype: 'int8' });
    const { manifest, tensors } = decodeWeights(bytes, tensorSpecs(delta));
    expect(manifest.tensors.map((t) => [t.dtype, t.byteLength])).toEqual([
      ['int8', 36],
      ['int8', 4],
      ['int8', 3],
      ['int8', 0],
    ]);
    expect(manifest.tensors[0]!.scale).toBe(Math.fround((18 * 3.1e-4) / 127));
    expect(manifest.tensors[1]!.scale).toBe(Math.fround(2e-3 / 127));
    expect(manifest.tensors[2]!.scale).toBe(0);
    expect(Array.from(tensors[2]!.data)).toEqual([0, 0, 0]);
    // The largest magnitude maps to ±127 steps.
    expect(tensors[1]!.data[1]).toBe(Math.fround(-127 * manifest.tensors[1]!.scale!));
  });

  it('int8 round trip error ≤ scale/2 for random tensors (fast-check)', () => {
    const arb = fc.array(fc.float({ min: -1e3, max: 1e3, noNaN: true }), { minLength: 1, maxLength: 300 });
    fc.assert(
      fc.property(arb, (xs) => {
        const t: NamedTensors = [{ name: 'x', shape: [xs.length], data: Float32Array.from(xs) }];
        const { manifest, tensors } = decodeWeights(encodeWeights(t, { dtype: 'int8' }));
        const scale = manifest.tensors[0]!.scale!;
        const src = t[0]!.data;
        for (let j = 0; j < src.length; j++) {
          // Half a step, plus float32 rounding of q·scale and of the scale itself.
          const bound = scale * 0.5 * (1 + 1e-5) + Math.abs(src[j]!) * 2 ** -23 + 2 ** -140;
          expect(Math.abs(tensors[0]!.data[j]! - src[j]!)).toBeLessThanOrEqual(bound);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('float16 round trip of random tensors keeps names, shapes and the nearest-half values (fast-check)', () => {
    const arb = fc.array(fc.float({ min: -100, max: 100, noNaN: true }), { maxLength: 200 });
    fc.assert(
      fc.property(arb, (xs) => {
        const t: NamedTensors = [{ name: 'x', shape: [xs.length], data: Float32Array.from(xs) }];
        const { tensors } = decodeWeights(encodeWeights(t, { dtype: 'float16' }), tensorSpecs(t));
        expect(Array.from(tensors[0]!.data)).toEqual(xs.map((x) => float16Value(float16Bits(x))));
      }),
      { numRuns: 200 },
    );
  });

  it('is deterministic, and float32 stays byte-identical to the default encoding', () => {
    for (const dtype of ['float16', 'int8'] as const) {
      expect(encodeWeights(delta, { dtype })).toEqual(
        encodeWeights(
          delta.map((t) => ({ ...t, data: Float32Array.from(t.data) })),
          { dtype },
        ),
      );
    }
    expect(encodeWeights(delta, { dtype: 'float32' })).toEqual(encodeWeights(delta));
  });

  it('refuses values the dtype cannot carry', () => {
    const big: NamedTensors = [{ name: 'w', shape: [2], data: new Float32Array([1, 65520]) }];
    expect(thrown(() => encodeWeights(big, { dtype: 'float16' }))).toEqual({
      code: 'CODEC_MALFORMED',
      message: 'weights: tensor "w" value 65520 is outside the float16 range ±65504',
    });
    // Non-finite float16 is carried (the coordinator's finiteness check refuses it), int8 cannot.
    const inf: NamedTensors = [{ name: 'w', shape: [2], data: new Float32Array([1, -Infinity]) }];
    expect(decodeWeights(encodeWeights(inf, { dtype: 'float16' })).tensors[0]!.data[1]).toBe(-Infinity);
    for (const bad of [NaN, Infinity]) {
      const t: NamedTensors = [{ name: 'w', shape: [2], data: new Float32Array([1, bad]) }];
      expect(thrown(() => encodeWeights(t, { dtype: 'int8' }))).toEqual({
        code: 'CODEC_MALFORMED',
        message: 'weights: tensor "w" has a non-finite value, which int8 cannot carry',
      });
    }
    expect(thrown(() => encodeWeights(delta, { dtype: 'bfloat16' as 'int8' })).code).toBe(
      'CODEC_UNSUPPORTED_DTYPE',
    );
  });
});

describe('decodeWeights rejects manifests that lie about compact tensors', () => {
  const f16 = encodeWeights(delta, { dtype: 'float16' });
  const i8 = encodeWeights(delta, { dtype: 'int8' });

  type Case = [string, () => Uint8Array, ErrorCode, string];
  const cases: Case[] = [
    [
      'float16 declared over float32-sized data',
      () => rewrite(encodeWeights(delta), (m) => void (m.tensors[0]!.dtype = 'float16')),
      'CODEC_MALFORMED',
      'tensor "conv/kernel" byteLength 144 does not match shape [3,3,1,4] × 2 bytes',
    ],
    [
      'float32 declared over float16 data',
      () => rewrite(f16, (m) => void (m.tensors[1]!.dtype = 'float32')),
      'CODEC_MALFORMED',
      'tensor "bn/gamma" byteLength 8 does not match shape [4] × 4 bytes',
    ],
    [
      'int8 declared over float16 data',
      () => rewrite(f16, (m) => Object.assign(m.tensors[0]!, { dtype: 'int8', scale: 1 })),
      'CODEC_MALFORMED',
      'tensor "conv/kernel" byteLength 72 does not match shape [3,3,1,4] × 1 bytes',
    ],
    [
      'int8 without a scale',
      () => rewrite(i8, (m) => void delete m.tensors[0]!.scale),
      'CODEC_MALFORMED',
      'tensor "conv/kernel" is int8 but has no finite, non-negative float32 scale',
    ],
    [
      'int8 with a negative scale',
      () => rewrite(i8, (m) => void (m.tensors[0]!.scale = -0.5)),
      'CODEC_MALFORMED',
      'is int8 but has no finite, non-negative float32 scale',
    ],
    [
      'int8 with a scale that is not a float32',
      () => rewrite(i8, (m) => void (m.tensors[0]!.scale = 0.1)),
      'CODEC_MALFORMED',
      'is int8 but has no finite, non-negative float32 scale',
    ],
    [
      'int8 with a string scale',
      () => rewrite(i8, (m) => void (m.tensors[0]!.scale = '1')),
      'CODEC_MALFORMED',
      'manifest does not match fedssl-weights/1 at tensors.0.scale',
    ],
    [
      'int8 with a huge scale',
      () => rewrite(i8, (m) => void (m.tensors[0]!.scale = 1e300)),
      'CODEC_MALFORMED',
      'is int8 but has no finite, non-negative float32 scale',
    ],
    [
      'a scale on a float16 tensor',
      () => rewrite(f16, (m) => void (m.tensors[1]!.scale = 1)),
      'CODEC_MALFORMED',
      'tensor "bn/gamma" has a scale, which only int8 tensors carry',
    ],
    [
      'int8 value -128',
      () => rewrite(i8, (_m, data) => void (data[0] = 0x80)),
      'CODEC_MALFORMED',
      'tensor "conv/kernel" holds int8 -128, outside the symmetric range',
    ],
    [
      'a non-zero int8 value at scale 0',
      () => rewrite(i8, (m, data) => void (data[m.tensors[2]!.offset as number] = 1)),
      'CODEC_MALFORMED',
      'tensor "zeros" has scale 0 but a non-zero value',
    ],
    [
      'a flipped int8 byte without a new hash',
      () => rewrite(i8, (_m, data) => void (data[3]! ^= 1), { rehash: false }),
      'CODEC_HASH_MISMATCH',
      'data section SHA-256 does not match the manifest',
    ],
    [
      'a changed scale is still a well-formed file (the envelope signature, not the codec, authenticates it)',
      () => rewrite(i8, (m) => void (m.tensors[1]!.scale = 1)),
      'none' as ErrorCode,
      '',
    ],
  ];

  it.each(cases)('%s', (_name, make, code, message) => {
    const e = thrown(() => decodeWeights(make(), tensorSpecs(delta)));
    expect(e.code).toBe(code);
    expect(e.message).toContain(message);
  });
});

describe('decodeWeights({ copy: false })', () => {
  it('returns float32 views into the bytes when aligned, copies otherwise, same values either way', () => {
    const bytes = encodeWeights(delta);
    const views = decodeWeights(bytes, tensorSpecs(delta), { copy: false }).tensors;
    const copies = decodeWeights(bytes, tensorSpecs(delta)).tensors;
    views.forEach((t, i) => {
      expect(Array.from(t.data)).toEqual(Array.from(copies[i]!.data));
      expect(t.data.buffer).toBe(bytes.buffer);
    });
    expect(copies[0]!.data.buffer).not.toBe(bytes.buffer);
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const unaligned = decodeWeights(shifted.subarray(1), undefined, { copy: false }).tensors;
    expect(unaligned[0]!.data.buffer).not.toBe(shifted.buffer);
    expect(Array.from(unaligned[0]!.data)).toEqual(Array.from(copies[0]!.data));
    // Compact dtypes always decode into fresh float32 memory.
    const f16 = encodeWeights(delta, { dtype: 'float16' });
    expect(decodeWeights(f16, undefined, { copy: false }).tensors[0]!.data.buffer).not.toBe(f16.buffer);
  });
});
