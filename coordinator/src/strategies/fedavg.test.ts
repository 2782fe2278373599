import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import type { NamedTensors } from '@fedssl/shared/codec';
import { isFedsslError } from '@fedssl/shared/errors';
import { createStrategy, FedAvgStrategy, weightedMeanDelta } from './index';
import {
  expectClose,
  input,
  plain,
  SHAPES,
  sources,
  scratch,
  tensorValues,
  tensors,
  update,
  type PlainUpdate,
} from './test-support';

/** Independent reference: plain loops over the list, float64, no streaming. */
function reference(global: number[][], updates: PlainUpdate[]): number[][] {
  const total = updates.reduce((n, u) => n + u.exampleCount, 0);
  return global.map((g, t) =>
    g.map((gi, i) => {
      let acc = 0;
      for (const u of updates) acc += (u.exampleCount / total) * u.values[t]![i]!;
      return Math.fround(gi + acc);
    }),
  );
}

describe('FedAvgStrategy', () => {
  it('computes global + weighted mean of deltas (worked example)', () => {
    const out = createStrategy('fedavg').aggregate(
      input(
        [
          [1, 1, 1, 1, 1, 1],
          [0, 0, 0],
        ],
        [
          {
            values: [
              [1, 2, 3, 4, 5, 6],
              [1, 1, 1],
            ],
            exampleCount: 1,
          },
          {
            values: [
              [4, 5, 6, 7, 8, 9],
              [-2, -2, -2],
            ],
            exampleCount: 3,
          },
        ],
      ),
    );
    // (1*1 + 3*4)/4 = 3.25 → 4.25, etc.
    expect(plain(out.weights)).toEqual([
      [4.25, 5.25, 6.25, 7.25, 8.25, 9.25],
      [-1.25, -1.25, -1.25],
    ]);
    expect(out.weights.map((t) => t.name)).toEqual(['a.weight', 'a.bias']);
    expect(out.weights[0]!.shape).toEqual([2, 3]);
    expect(out.state).toBeNull();
  });

  it('matches an independent weighted-average computation and reads each delta once', () => {
    fc.assert(
      fc.property(tensorValues, fc.array(update, { minLength: 1, maxLength: 6 }), (g, us) => {
        const reads: number[] = [];
        const out = new FedAvgStrategy().aggregate({
          global: tensors(g),
          updates: sources(us, reads),
          state: null,
          scratchDir: '/nonexistent',
        });
        expectClose(plain(out.weights), reference(g, us), 1e-4);
        expect(reads).toEqual(us.map(() => 1));
      }),
    );
  });

  it('folds in groups bit-identically to adding one delta at a time, releasing each delta once folded', () => {
    fc.assert(
      fc.property(fc.array(update, { minLength: 1, maxLength: 11 }), (us) => {
        const total = us.reduce((n, u) => n + u.exampleCount, 0);
        // One delta at a time, left to right: sum = w₀x₀, then sum + wₖxₖ.
        const expected = SHAPES.map((_, t) =>
          Float64Array.from(us[0]!.values[t]!, (_v, i) => {
            let acc = (us[0]!.exampleCount / total) * Math.fround(us[0]!.values[t]![i]!);
            for (const u of us.slice(1)) acc = acc + (u.exampleCount / total) * Math.fround(u.values[t]![i]!);
            return acc;
          }),
        );
        const events: string[] = [];
        let held = 0;
        let maxHeld = 0;
        const got = weightedMeanDelta({
          global: tensors(us[0]!.values.map((v) => v.map(() => 0))),
          updates: sources(us).map((src, k) => ({
            ...src,
            readDelta: () => {
              events.push(`read ${k}`);
              maxHeld = Math.max(maxHeld, ++held);
              return src.readDelta();
            },
            release: () => {
              events.push(`release ${k}`);
              held--;
            },
          })),
        });
        expect(got.map((a) => Array.from(a))).toEqual(expected.map((a) => Array.from(a)));
        expect(events.filter((e) => e.startsWith('release'))).toEqual(us.map((_, k) => `release ${k}`));
        expect(events.indexOf(`release 0`)).toBeGreaterThan(events.indexOf(`read 0`));
        expect(maxHeld).toBe(Math.min(4, us.length));
        expect(held).toBe(0);
      }),
    );
  });

  it('borrows its float64 sums from the scratch buffers, whatever they held, and gives them back', () => {
    fc.assert(
      fc.property(tensorValues, fc.array(update, { minLength: 1, maxLength: 6 }), (g, us) => {
        const lent: Uint8Array[] = [];
        const back: ArrayBufferLike[] = [];
        const buffers = {
          // Stale contents (NaN patterns): every sum must be written before it is read.
          acquire: (bytes: number) => lent[lent.push(new Uint8Array(bytes).fill(0xff)) - 1]!,
          recycle: (views: Iterable<ArrayBufferView>) => {
            for (const v of views) back.push(v.buffer);
          },
        };
        const run = (withBuffers: boolean) =>
          plain(
            new FedAvgStrategy().aggregate({
              global: tensors(g),
              updates: sources(us),
              state: null,
              scratchDir: '/nonexistent',
              ...(withBuffers ? { buffers } : {}),
            }).weights,
          );
        expect(run(true)).toEqual(run(false));
        expect(lent).toHaveLength(1);
        expect(lent[0]!.length).toBe(8 * 9);
        expect(back.length).toBeGreaterThan(0);
        expect(back.every((b) => b === lent[0]!.buffer)).toBe(true);
      }),
    );
  });

  it('gives byte-identical results for any arrival order once sorted by siteId', () => {
    fc.assert(
      fc.property(
        tensorValues,
        fc.uniqueArray(fc.record({ siteId: fc.stringMatching(/^[a-z]{1,6}$/), u: update }), {
          minLength: 1,
          maxLength: 6,
          selector: (x) => x.siteId,
        }),
        fc.infiniteStream(fc.nat()),
        (g, arrivals, randoms) => {
          const run = (list: typeof arrivals): Uint8Array => {
            const sorted = [...list].sort((a, b) => (a.siteId < b.siteId ? -1 : a.siteId > b.siteId ? 1 : 0));
            const out = createStrategy('fedavg').aggregate({
              global: tensors(g),
              updates: sources(sorted.map((a) => a.u)),
              state: null,
              scratchDir: '/nonexistent',
            });
            return new Uint8Array(Buffer.concat(out.weights.map((t) => Buffer.from(t.data.buffer))));
          };
          const shuffled = [...arrivals];
          const it = randoms[Symbol.iterator]();
          for (let i = shuffled.length - 1; i > 0; i--) {
            const j = (it.next().value as number) % (i + 1);
            [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
          }
          expect(run(shuffled)).toEqual(run(arrivals));
        },
      ),
    );
  });

  it('rejects a delta whose tensors do not match the global, and bad example counts', () => {
    const s = new FedAvgStrategy();
    const global = tensors([
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0],
    ]);
    const bad: NamedTensors = [{ name: 'a.weight', shape: [2, 3], data: new Float32Array(6) }];
    const run = (exampleCount: number, delta = bad) =>
      s.aggregate({
        global,
        updates: [{ siteId: 's', exampleCount, readDelta: () => delta }],
        state: null,
        scratchDir: scratch(),
      });
    expect(() => run(1)).toThrow('delta has 1 tensors, global has 2');
    try {
      run(1);
    } catch (e) {
      expect(isFedsslError(e, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
    }
    expect(() => run(0, global)).toThrow('exampleCount must be a positive number, got 0');
  });

  it('refuses to aggregate no updates and unknown strategy names', () => {
    expect(() =>
      new FedAvgStrategy().aggregate(
        input(
          [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0],
          ],
          [],
        ),
      ),
    ).toThrow('fedavg: nothing to aggregate without any update');
    expect(() => createStrategy('krum')).toThrow(
      'unknown strategy "krum"; known: fedavg, fedavgm, fedadam, median, trimmed-mean',
    );
  });
});
