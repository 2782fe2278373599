import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { createStrategy, TrimmedMeanStrategy } from './index';
import {
  expectClose,
  plain,
  scratch,
  sources,
  tensorValues,
  tensors,
  update,
  type PlainUpdate,
} from './test-support';

/** Independent reference: sort each coordinate, slice off ⌊β·n⌋ per side, average the rest. */
function reference(global: number[][], updates: PlainUpdate[], beta: number): number[][] {
  const k = Math.floor(beta * updates.length);
  return global.map((g, t) =>
    g.map((gi, i) => {
      const kept = updates
        .map((u) => u.values[t]![i]!)
        .sort((a, b) => a - b)
        .slice(k, updates.length - k);
      return Math.fround(gi + kept.reduce((s, x) => s + x, 0) / kept.length);
    }),
  );
}

describe('TrimmedMeanStrategy', () => {
  it('drops ⌊β·n⌋ values on each side per coordinate (worked example)', () => {
    const out = createStrategy({ name: 'trimmed-mean', beta: 0.2 }).aggregate({
      global: tensors([
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ]),
      // n = 5, β = 0.2 → k = 1: the extreme 100 and -100 are dropped.
      updates: sources(
        [
          [
            [1, 100, 0, 0, 0, 0],
            [1, 1, 1],
          ],
          [
            [2, 2, 0, 0, 0, 0],
            [1, 1, 1],
          ],
          [
            [3, 3, 0, 0, 0, 0],
            [1, 1, 1],
          ],
          [
            [4, 4, 0, 0, 0, 0],
            [1, 1, 1],
          ],
          [
            [5, -100, 0, 0, 0, 0],
            [1, 1, 1],
          ],
        ].map((values) => ({ values, exampleCount: 1 })),
      ),
      state: null,
      scratchDir: scratch(),
    });
    expect(plain(out.weights)).toEqual([
      [3, 3, 0, 0, 0, 0],
      [1, 1, 1],
    ]);
  });

  it('matches the sorted-slice reference for any β and block size', () => {
    fc.assert(
      fc.property(
        tensorValues,
        fc.array(update, { minLength: 1, maxLength: 8 }),
        fc.double({ min: 0, max: 0.49, noNaN: true }),
        fc.integer({ min: 1, max: 7 }),
        (g, us, beta, block) => {
          const out = new TrimmedMeanStrategy({ beta }, block).aggregate({
            global: tensors(g),
            updates: sources(us),
            state: null,
            scratchDir: scratch(),
          });
          expectClose(plain(out.weights), reference(g, us, beta), 1e-6);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('with β = 0 is the unweighted mean', () => {
    const g = [
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0],
    ];
    const us = [
      {
        values: [
          [1, 1, 1, 1, 1, 1],
          [0, 0, 0],
        ],
        exampleCount: 100,
      },
      {
        values: [
          [3, 3, 3, 3, 3, 3],
          [6, 6, 6],
        ],
        exampleCount: 1,
      },
    ];
    const out = createStrategy({ name: 'trimmed-mean', beta: 0 }).aggregate({
      global: tensors(g),
      updates: sources(us),
      state: null,
      scratchDir: scratch(),
    });
    expect(plain(out.weights)).toEqual([
      [2, 2, 2, 2, 2, 2],
      [3, 3, 3],
    ]);
  });

  it('refuses β outside [0, 0.5) with the exact message', () => {
    expect(() => new TrimmedMeanStrategy({ beta: 0.5 })).toThrow(
      'trimmed-mean beta must be in [0, 0.5), got 0.5',
    );
    expect(() => createStrategy({ name: 'trimmed-mean', beta: -0.1 })).toThrow(
      'strategy "trimmed-mean": beta: Too small: expected number to be >=0',
    );
  });
});
