import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { isFedsslError } from '@fedssl/shared/errors';
import { createStrategy, FedAvgMStrategy } from './index';
import { expectClose, input, plain, tensorValues, update, type PlainUpdate } from './test-support';

/**
 * Independent reference, written from Hsu et al. 2019 / Flower's FedAvgM with plain arrays:
 * pseudo-gradient g = w − avg(w_i) (avg weighted by examples), v = β·v + g, w = w − η·v.
 */
function referenceRounds(w0: number[][], rounds: PlainUpdate[][], eta: number, beta: number): number[][][] {
  let w = w0.map((t) => t.slice());
  let v = w0.map((t) => t.map(() => 0));
  const out: number[][][] = [];
  for (const updates of rounds) {
    const total = updates.reduce((n, u) => n + u.exampleCount, 0);
    const avg = w.map((t, ti) =>
      t.map((x, i) => updates.reduce((s, u) => s + (u.exampleCount / total) * (x + u.values[ti]![i]!), 0)),
    );
    const grad = w.map((t, ti) => t.map((x, i) => x - avg[ti]![i]!));
    v = v.map((t, ti) => t.map((x, i) => beta * x + grad[ti]![i]!));
    w = w.map((t, ti) => t.map((x, i) => x - eta * v[ti]![i]!));
    out.push(w);
  }
  return out;
}

describe('FedAvgMStrategy', () => {
  it('equals FedAvg in the first round when η = 1 (v starts at zero)', () => {
    const g = [
      [1, 2, 3, 4, 5, 6],
      [0, 0, 0],
    ];
    const us = [
      {
        values: [
          [1, 1, 1, 1, 1, 1],
          [2, 2, 2],
        ],
        exampleCount: 1,
      },
      {
        values: [
          [3, 3, 3, 3, 3, 3],
          [0, 0, 0],
        ],
        exampleCount: 1,
      },
    ];
    const m = createStrategy({ name: 'fedavgm', serverMomentum: 0.5 }).aggregate(input(g, us));
    const a = createStrategy('fedavg').aggregate(input(g, us));
    expect(plain(m.weights)).toEqual(plain(a.weights));
    expect(plain(m.state!)).toEqual([
      [2, 2, 2, 2, 2, 2],
      [1, 1, 1],
    ]);
    expect(m.state!.map((t) => t.name)).toEqual(['momentum.a.weight', 'momentum.a.bias']);
  });

  it('matches the reference over several rounds, carrying the momentum as state', () => {
    fc.assert(
      fc.property(
        tensorValues,
        fc.array(fc.array(update, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 4 }),
        fc.double({ min: 0.1, max: 2, noNaN: true }),
        fc.double({ min: 0, max: 0.99, noNaN: true }),
        (g, rounds, eta, beta) => {
          const ref = referenceRounds(g, rounds, eta, beta);
          const s = new FedAvgMStrategy({ serverLearningRate: eta, serverMomentum: beta });
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

  it('refuses a stored state that does not fit the model', () => {
    const g = [
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0],
    ];
    const us = [{ values: g, exampleCount: 1 }];
    const wrong = [{ name: 'momentum.other', shape: [6], data: new Float32Array(6) }];
    try {
      createStrategy('fedavgm').aggregate(input(g, us, wrong));
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'STRATEGY_STATE_INVALID')).toBe(true);
      expect((e as Error).message).toBe('fedavgm: stored server state has 1 tensors, expected 2');
    }
  });
});
