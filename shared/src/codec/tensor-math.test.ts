import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFedsslError } from '../errors';
import type { NamedTensors } from './types';
import { add, allFinite, assertSameLayout, l2Norm, parameterCount, scale, subtract } from './tensor-math';

const a: NamedTensors = [
  { name: 'w', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
  { name: 'b', shape: [2], data: new Float32Array([0.5, -0.5]) },
];
const b: NamedTensors = [
  { name: 'w', shape: [2, 2], data: new Float32Array([1, 1, 1, 1]) },
  { name: 'b', shape: [2], data: new Float32Array([0.5, 0.5]) },
];

describe('subtract / add / scale', () => {
  it('compute element-wise and leave the inputs alone', () => {
    const d = subtract(a, b);
    expect(Array.from(d[0]?.data ?? [])).toEqual([0, 1, 2, 3]);
    expect(Array.from(d[1]?.data ?? [])).toEqual([0, -1]);
    expect(d.map((t) => t.name)).toEqual(['w', 'b']);
    expect(Array.from(add(b, d)[0]?.data ?? [])).toEqual([1, 2, 3, 4]);
    expect(Array.from(scale(a, 2)[1]?.data ?? [])).toEqual([1, -1]);
    expect(Array.from(a[0]?.data ?? [])).toEqual([1, 2, 3, 4]);
  });

  it('add(b, subtract(a, b)) recovers a for small integers (exact in float32)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -1000, max: 1000 }), { minLength: 1, maxLength: 20 }), (xs) => {
        const x: NamedTensors = [{ name: 't', shape: [xs.length], data: Float32Array.from(xs) }];
        const y: NamedTensors = [
          { name: 't', shape: [xs.length], data: Float32Array.from(xs.map((v) => v * 3 - 7)) },
        ];
        expect(Array.from(add(y, subtract(x, y))[0]?.data ?? [])).toEqual(xs);
      }),
      { numRuns: 100 },
    );
  });

  it('name the first mismatching tensor', () => {
    const swapped = [b[1], b[0]] as NamedTensors;
    expect(() => subtract(a, swapped)).toThrow('tensor #0 differs: "w" [2,2] vs "b" [2]');
    expect(() => add(a, b.slice(0, 1))).toThrow(
      'tensor lists differ in length (2 vs 1); first unmatched tensor is #1 "b"',
    );
    const reshaped: NamedTensors = [
      { ...(b[0] as NamedTensors[number]), shape: [4] },
      b[1] as NamedTensors[number],
    ];
    try {
      assertSameLayout(a, reshaped);
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
      expect((e as Error).message).toBe('tensor #0 differs: "w" [2,2] vs "w" [4]');
    }
  });
});

describe('l2Norm / allFinite / parameterCount', () => {
  it('norm over all tensors in float64', () => {
    expect(l2Norm(a)).toBeCloseTo(Math.sqrt(1 + 4 + 9 + 16 + 0.25 + 0.25), 12);
    expect(l2Norm([])).toBe(0);
    // float32 max squared overflows float32 but not the float64 accumulator.
    const big: NamedTensors = [{ name: 'x', shape: [2], data: new Float32Array([3.4e38, 3.4e38]) }];
    expect(l2Norm(big)).toBeCloseTo(Math.fround(3.4e38) * Math.SQRT2, -30);
  });

  it('allFinite spots NaN and infinities anywhere', () => {
    expect(allFinite(a)).toBe(true);
    for (const bad of [NaN, Infinity, -Infinity]) {
      const t: NamedTensors = [
        a[0] as NamedTensors[number],
        { name: 'b', shape: [3], data: new Float32Array([1, bad, 2]) },
      ];
      expect(allFinite(t)).toBe(false);
      expect(Number.isFinite(l2Norm(t))).toBe(false);
    }
  });

  it('parameterCount', () => {
    expect(parameterCount(a)).toBe(6);
  });
});
