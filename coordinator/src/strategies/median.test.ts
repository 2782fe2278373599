import { describe, it, expect } from 'vitest';
import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import type { NamedTensors } from '@fedssl/shared/codec';
import { createStrategy, MedianStrategy } from './index';
import { plain, scratch, sources, tensorValues, tensors, update, type PlainUpdate } from './test-support';
import type { UpdateSource } from './strategy';

/** Independent reference: per coordinate, sort the values with Array.prototype.sort. */
function reference(global: number[][], updates: PlainUpdate[]): number[][] {
  return global.map((g, t) =>
    g.map((gi, i) => {
      const col = updates.map((u) => u.values[t]![i]!).sort((a, b) => a - b);
      const n = col.length;
      const med = n % 2 ? col[(n - 1) / 2]! : (col[n / 2 - 1]! + col[n / 2]!) / 2;
      return Math.fround(gi + med);
    }),
  );
}

describe('MedianStrategy', () => {
  it('takes the coordinate-wise median, ignoring example counts (worked example)', () => {
    const out = createStrategy('median').aggregate({
      global: tensors([
        [0, 0, 0, 0, 0, 0],
        [10, 10, 10],
      ]),
      updates: sources([
        {
          values: [
            [1, 5, 0, 0, 0, 1000],
            [1, 2, 3],
          ],
          exampleCount: 1000,
        },
        {
          values: [
            [2, 4, 0, 0, 0, -1000],
            [3, 2, 1],
          ],
          exampleCount: 1,
        },
        {
          values: [
            [3, 3, 0, 0, 1, 7],
            [2, 9, 2],
          ],
          exampleCount: 1,
        },
      ]),
      state: null,
      scratchDir: scratch(),
    });
    expect(plain(out.weights)).toEqual([
      [2, 4, 0, 0, 0, 7],
      [12, 12, 12],
    ]);
  });

  it('matches the sorted-array reference for any block size, leaves no files and reads each delta once', () => {
    fc.assert(
      fc.property(
        tensorValues,
        fc.array(update, { minLength: 1, maxLength: 7 }),
        fc.integer({ min: 1, max: 8 }),
        (g, us, block) => {
          const dir = scratch();
          const reads: number[] = [];
          const out = new MedianStrategy(block).aggregate({
            global: tensors(g),
            updates: sources(us, reads),
            state: null,
            scratchDir: dir,
          });
          expect(plain(out.weights)).toEqual(reference(g, us));
          expect(reads).toEqual(us.map(() => 1));
          expect(readdirSync(dir)).toEqual([]);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('is independent of the order of the updates', () => {
    fc.assert(
      fc.property(tensorValues, fc.array(update, { minLength: 2, maxLength: 6 }), (g, us) => {
        const run = (list: PlainUpdate[]) =>
          plain(
            createStrategy('median').aggregate({
              global: tensors(g),
              updates: sources(list),
              state: null,
              scratchDir: scratch(),
            }).weights,
          );
        expect(run([...us].reverse())).toEqual(run(us));
      }),
    );
  });

  it('removes its spill files when a delta fails to read', () => {
    const dir = scratch();
    const good: NamedTensors = tensors([
      [1, 1, 1, 1, 1, 1],
      [1, 1, 1],
    ]);
    const updates: UpdateSource[] = [
      { siteId: 'a', exampleCount: 1, readDelta: () => good },
      {
        siteId: 'b',
        exampleCount: 1,
        readDelta: () => {
          throw new Error('envelope failed to open');
        },
      },
    ];
    expect(() =>
      new MedianStrategy().aggregate({ global: good, updates, state: null, scratchDir: dir }),
    ).toThrow('envelope failed to open');
    expect(readdirSync(dir)).toEqual([]);
  });
});
