import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { createStrategy, FedAdamStrategy } from './index';
import { expectClose, input, plain, tensorValues, update, type PlainUpdate } from './test-support';

/** Independent reference: Reddi et al. 2021, Algorithm 2 (FedAdam), plain arrays, float64. */
function referenceRounds(
  w0: number[][],
  rounds: PlainUpdate[][],
  o: { eta: number; b1: number; b2: number; tau: number },
): number[][][] {
  let x = w0.map((t) => t.slice());
  let m = w0.map((t) => t.map(() => 0));
  let v = w0.map((t) => t.map(() => 0));
  const out: number[][][] = [];
  for (const updates of rounds) {
    const total = updates.reduce((n, u) => n + u.exampleCount, 0);
    const delta = x.map((t, ti) =>
      t.map((_, i) => updates.reduce((s, u) => s + u.exampleCount * u.values[ti]![i]!, 0) / total),
    );
    m = m.map((t, ti) => t.map((mi, i) => o.b1 * mi + (1 - o.b1) * delta[ti]![i]!));
    v = v.map((t, ti) => t.map((vi, i) => o.b2 * vi + (1 - o.b2) * delta[ti]![i]! ** 2));
    x = x.map((t, ti) => t.map((xi, i) => xi + (o.eta * m[ti]![i]!) / (Math.sqrt(v[ti]![i]!) + o.tau)));
    out.push(x);
  }
  return out;
}

describe('FedAdamStrategy', () => {
  it('takes a first step of η·(1−β₁)·Δ/(√(1−β₂)·|Δ| + τ) (worked example)', () => {
    const out = createStrategy({
      name: 'fedadam',
      serverLearningRate: 0.1,
      beta1: 0.9,
      beta2: 0.99,
      tau: 1e-12,
    }).aggregate(
      input(
        [
          [0, 0, 0, 0, 0, 0],
          [1, 1, 1],
        ],
        [
          {
            values: [
              [1, -1, 2, -2, 4, 0.5],
              [0, 0, 0],
            ],
            exampleCount: 5,
          },
        ],
      ),
    );
    // m = 0.1·Δ, v = 0.01·Δ², m/(√v + τ) ≈ sign(Δ) → step = 0.1·sign(Δ); Δ = 0 → no step.
    expectClose(
      plain(out.weights),
      [
        [0.1, -0.1, 0.1, -0.1, 0.1, 0.1],
        [1, 1, 1],
      ],
      1e-6,
    );
    expect(out.state!.map((t) => t.name)).toEqual(['m.a.weight', 'm.a.bias', 'v.a.weight', 'v.a.bias']);
  });

  it('matches the reference over several rounds, carrying m and v as state', () => {
    fc.assert(
      fc.property(
        tensorValues,
        fc.array(fc.array(update, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 4 }),
        fc.record({
          eta: fc.double({ min: 1e-3, max: 1, noNaN: true }),
          b1: fc.double({ min: 0, max: 0.99, noNaN: true }),
          b2: fc.double({ min: 0.5, max: 0.999, noNaN: true }),
          tau: fc.double({ min: 1e-3, max: 0.1, noNaN: true }),
        }),
        (g, rounds, o) => {
          const ref = referenceRounds(g, rounds, o);
          const s = new FedAdamStrategy({ serverLearningRate: o.eta, beta1: o.b1, beta2: o.b2, tau: o.tau });
          let w = g;
          let state = null;
          for (let r = 0; r < rounds.length; r++) {
            const out = s.aggregate(input(w, rounds[r]!, state));
            w = plain(out.weights);
            state = out.state;
            expectClose(w, ref[r]!, 1e-3);
          }
        },
      ),
      { numRuns: 50 },
    );
  });
});
