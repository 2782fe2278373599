import { describe, expect, it } from 'vitest';
import { computeRdp, dpEpsilon, epsilonFromRdp, logErfc, rdpSampledGaussian } from './accountant';

describe('RDP accountant: published reference values', () => {
  it('matches Opacus (tests/accountants_test.py): σ=1.5, q=0.04, 2250 steps, δ=1e-5 → ε=7.32911117143', () => {
    const { epsilon } = dpEpsilon({ noiseMultiplier: 1.5, sampleRate: 0.04, steps: 2250, delta: 1e-5 });
    expect(epsilon).toBeCloseTo(7.32911117143, 4);
  });

  it('matches dp_accounting (rdp_privacy_accountant_test.py): Poisson-sampled Gaussian q=0.01, σ=2.5, 50 steps', () => {
    const orders = [2.5, 5, 50, 100];
    const expected = [1.0854871e-3, 2.18075656e-3, 2.38460375e-2, 1.67416308e2];
    const rdp = computeRdp(0.01, 2.5, 50, orders);
    rdp.forEach((r, k) => expect(Math.abs(r - expected[k]!) / expected[k]!).toBeLessThan(1e-4));
    // At α = 1.5 current dp_accounting sums the absolute values of the alternating series (an
    // upper bound, 6.70579741e-4); the TF-Privacy/Opacus series used here is tighter.
    const [r15] = computeRdp(0.01, 2.5, 50, [1.5]);
    expect(r15).toBeLessThanOrEqual(6.70579741e-4);
    expect(r15).toBeGreaterThan(0.95 * 6.70579741e-4);
  });

  it('matches dp_accounting: pure-DP curve rdp=1.1 on orders 2..32, δ=1e-5 → ε=1.32783806176 at order 32', () => {
    const orders = Array.from({ length: 31 }, (_, i) => i + 2);
    const r = epsilonFromRdp(
      orders,
      orders.map(() => 1.1),
      1e-5,
    );
    expect(r.epsilon).toBeCloseTo(1.32783806176, 9);
    expect(r.order).toBe(32);
  });

  it('matches dp_accounting: the Gaussian mechanism with σ=4.530877117 is (1, 1e-6)-DP', () => {
    const orders = Array.from({ length: 99000 }, (_, i) => 0.001 * (i + 1000));
    const { epsilon } = dpEpsilon({
      noiseMultiplier: 4.530877117,
      sampleRate: 1,
      steps: 1,
      delta: 1e-6,
      orders,
    });
    expect(epsilon).toBeCloseTo(1, 5);
  });
});

describe('RDP accountant: properties', () => {
  it('full participation is α/(2σ²) per step and composes linearly', () => {
    expect(rdpSampledGaussian(1, 2, 3)).toBeCloseTo(3 / 8, 12);
    expect(computeRdp(1, 2, 7, [3])[0]).toBeCloseTo((7 * 3) / 8, 12);
  });

  it('ε grows with rounds and shrinks with noise', () => {
    const eps = (sigma: number, steps: number) =>
      dpEpsilon({ noiseMultiplier: sigma, sampleRate: 1, steps, delta: 1e-5 }).epsilon;
    expect(eps(1, 10)).toBeGreaterThan(eps(1, 5));
    expect(eps(2, 10)).toBeLessThan(eps(1, 10));
    expect(eps(1, 0)).toBe(0);
    expect(dpEpsilon({ noiseMultiplier: 0, sampleRate: 1, steps: 1, delta: 1e-5 }).epsilon).toBe(Infinity);
  });

  it('log erfc is accurate in both tails', () => {
    // erfc(0)=1, erfc(1)=0.157299207050285, erfc(10)=2.088487583762545e-45, erfc(-2)=1.995322265018953
    expect(logErfc(0)).toBeCloseTo(0, 6);
    expect(Math.exp(logErfc(1)) / 0.157299207050285).toBeCloseTo(1, 6);
    expect(logErfc(10) - Math.log(2.088487583762545e-45)).toBeCloseTo(0, 5);
    expect(Math.exp(logErfc(-2))).toBeCloseTo(1.995322265018953, 7);
  });

  it('rejects a δ outside (0, 1)', () => {
    expect(() => epsilonFromRdp([2], [1], 0)).toThrow('delta must be in (0, 1)');
  });
});
