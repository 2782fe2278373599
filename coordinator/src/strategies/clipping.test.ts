import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { ClippingStrategy, createStrategy, FedAvgStrategy } from './index';
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

/** Independent reference: clip every delta to norm C, then the example-weighted mean. */
function reference(global: number[][], updates: PlainUpdate[], C: number): number[][] {
  const clipped = updates.map((u) => {
    const norm = Math.hypot(...u.values.flat());
    const f = norm > C ? C / norm : 1;
    return { w: u.exampleCount, values: u.values.map((t) => t.map((x) => x * f)) };
  });
  const total = clipped.reduce((s, u) => s + u.w, 0);
  return global.map((g, t) =>
    g.map((gi, i) => gi + clipped.reduce((s, u) => s + (u.w * u.values[t]![i]!) / total, 0)),
  );
}

describe('ClippingStrategy', () => {
  it('scales a delta above C down to norm C before folding (worked example)', () => {
    // Δ₁ has norm 5 (3, 4), clipped to C = 1 → (0.6, 0.8); Δ₂ has norm 0.5, kept.
    const out = createStrategy({ name: 'fedavg', clipNorm: 1 }).aggregate({
      global: tensors([
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ]),
      updates: sources([
        {
          values: [
            [3, 4, 0, 0, 0, 0],
            [0, 0, 0],
          ],
          exampleCount: 1,
        },
        {
          values: [
            [0, 0, 0, 0, 0, 0.5],
            [0, 0, 0],
          ],
          exampleCount: 1,
        },
      ]),
      state: null,
      scratchDir: scratch(),
    });
    expectClose(plain(out.weights), [
      [0.3, 0.4, 0, 0, 0, 0.25],
      [0, 0, 0],
    ]);
    expect(out.weights.length).toBe(2);
  });

  it('matches the clip-then-average reference', () => {
    fc.assert(
      fc.property(
        tensorValues,
        fc.array(update, { minLength: 1, maxLength: 5 }),
        fc.double({ min: 0.01, max: 30, noNaN: true }),
        (g, us, C) => {
          const out = new ClippingStrategy(new FedAvgStrategy(), C).aggregate({
            global: tensors(g),
            updates: sources(us),
            state: null,
            scratchDir: scratch(),
          });
          expectClose(plain(out.weights), reference(g, us, C), 1e-4);
        },
      ),
    );
  });

  it('wraps coordinate-wise and stateful strategies too and names itself after them', () => {
    const median = createStrategy({ name: 'median', clipNorm: 2 });
    expect(median.name).toBe('median+clip');
    const out = median.aggregate({
      global: tensors([
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ]),
      // Every delta (norm 10) is clipped to norm 2 → every coordinate shrinks by 5.
      updates: sources(
        [10, 10, 10].map((x) => ({
          values: [
            [x, 0, 0, 0, 0, 0],
            [0, 0, 0],
          ],
          exampleCount: 1,
        })),
      ),
      state: null,
      scratchDir: scratch(),
    });
    expect(plain(out.weights)[0]).toEqual([2, 0, 0, 0, 0, 0]);
    const adam = createStrategy({ name: 'fedadam', clipNorm: 1 });
    expect([adam.name, adam.stateful]).toEqual(['fedadam+clip', true]);
  });

  it('refuses a non-positive clip norm', () => {
    expect(() => new ClippingStrategy(new FedAvgStrategy(), 0)).toThrow(
      'clipNorm must be a positive number, got 0',
    );
    expect(() => createStrategy({ name: 'median', clipNorm: -1 })).toThrow(
      'strategy "median": clipNorm: Too small: expected number to be >0',
    );
  });
});
