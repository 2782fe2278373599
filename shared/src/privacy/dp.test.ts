import { describe, expect, it } from 'vitest';
import type { NamedTensors } from '../codec/types';
import { globalL2Norm, noiseNormBound, privatizeDelta, scalarCount } from './dp';
import { GaussianSampler, seededBytes } from './random';

function delta(values: number[][]): NamedTensors {
  return values.map((v, i) => ({ name: `t${i}`, shape: [v.length], data: Float32Array.from(v) }));
}

function ramp(n: number, scale: number): NamedTensors {
  return delta([Array.from({ length: n }, (_, i) => scale * Math.sin(i + 1))]);
}

describe('Gaussian sampler', () => {
  it('draws N(0,1): mean, variance, and tail mass match', () => {
    const g = new GaussianSampler(seededBytes('moments'));
    const n = 200_000;
    let s = 0;
    let s2 = 0;
    let beyond2 = 0;
    for (let i = 0; i < n; i++) {
      const x = g.next();
      s += x;
      s2 += x * x;
      if (Math.abs(x) > 2) beyond2++;
    }
    expect(Math.abs(s / n)).toBeLessThan(0.01); // sd of the mean = 0.0022
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.015); // sd of the variance ≈ 0.0032
    expect(Math.abs(beyond2 / n - 0.0455)).toBeLessThan(0.003); // P(|Z| > 2) = 0.0455
  });

  it('a seed gives the same stream; the CSPRNG default does not repeat', () => {
    const a = new GaussianSampler(seededBytes('s'));
    const b = new GaussianSampler(seededBytes('s'));
    const c = new GaussianSampler(seededBytes('t'));
    const xs = Array.from({ length: 5 }, () => a.next());
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c.next())).not.toEqual(xs);
    const d = new GaussianSampler();
    const e = new GaussianSampler();
    expect(d.next()).not.toBe(e.next());
  });
});

describe('privatizeDelta', () => {
  it('clips the whole delta to C and leaves a small one unscaled', () => {
    const big = ramp(1000, 1); // norm ≈ 22
    const tiny = ramp(1000, 1e-4);
    // σ tiny so the clipped norm is visible through the noise.
    const dp = { clipNorm: 1, noiseMultiplier: 1e-9 };
    const a = privatizeDelta(big, dp, new GaussianSampler(seededBytes('a')));
    expect(a.applied.normBefore).toBeCloseTo(globalL2Norm(big), 6);
    expect(a.applied.clipFactor).toBeCloseTo(1 / globalL2Norm(big), 9);
    expect(globalL2Norm(a.delta)).toBeCloseTo(1, 5);
    const b = privatizeDelta(tiny, dp, new GaussianSampler(seededBytes('b')));
    expect(b.applied.clipFactor).toBe(1);
    expect(globalL2Norm(b.delta)).toBeCloseTo(globalL2Norm(tiny), 6);
  });

  it('adds noise of standard deviation σC to every coordinate, across tensors', () => {
    const zero = delta([new Array<number>(30_000).fill(0), new Array<number>(20_000).fill(0)]);
    const { delta: out, applied } = privatizeDelta(
      zero,
      { clipNorm: 0.5, noiseMultiplier: 2 },
      new GaussianSampler(seededBytes('std')),
    );
    expect(applied.noiseStd).toBe(1);
    for (const t of out) {
      let s2 = 0;
      for (const x of t.data) s2 += x * x;
      expect(Math.sqrt(s2 / t.data.length)).toBeCloseTo(1, 1);
    }
    expect(out[0]!.data).not.toEqual(out[1]!.data.subarray(0, 20_000));
  });

  it('the result norm stays within C + the noise bound, and the input is untouched', () => {
    const d = ramp(5000, 3);
    const copy = d[0]!.data.slice();
    const dp = { clipNorm: 2, noiseMultiplier: 0.7 };
    for (const seed of ['x', 'y', 'z']) {
      const { delta: out } = privatizeDelta(d, dp, new GaussianSampler(seededBytes(seed)));
      const bound = dp.clipNorm + noiseNormBound(scalarCount(d), dp.clipNorm * dp.noiseMultiplier);
      expect(globalL2Norm(out)).toBeLessThanOrEqual(bound);
      // and well above C alone: the noise is there (‖z‖ ≈ σC√d = 99)
      expect(globalL2Norm(out)).toBeGreaterThan(0.9 * dp.clipNorm * dp.noiseMultiplier * Math.sqrt(5000));
    }
    expect(d[0]!.data).toEqual(copy);
  });
});
