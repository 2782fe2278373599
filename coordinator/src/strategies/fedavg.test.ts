import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import type { NamedTensors } from '@fedssl/shared/codec';
import { isFedsslError } from '@fedssl/shared/errors';
import { createStrategy, FedAvgStrategy } from './index';

const SHAPES = [
  { name: 'a.weight', shape: [2, 3] },
  { name: 'a.bias', shape: [3] },
];

function tensors(values: number[][]): NamedTensors {
  return SHAPES.map((s, i) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: Float32Array.from(values[i]!),
  }));
}

/** Independent reference: plain nested loops over the list, float64, no streaming. */
function reference(
  global: NamedTensors,
  updates: { delta: NamedTensors; exampleCount: number }[],
): number[][] {
  const total = updates.reduce((n, u) => n + u.exampleCount, 0);
  return global.map((g, t) => {
    const out: number[] = [];
    for (let i = 0; i < g.data.length; i++) {
      let acc = 0;
      for (const u of updates) acc += (u.exampleCount / total) * u.delta[t]!.data[i]!;
      out.push(Math.fround(g.data[i]! + acc));
    }
    return out;
  });
}

const f32 = fc.float({ min: -10, max: 10, noNaN: true, noDefaultInfinity: true }).map(Math.fround);
const tensorValues = fc.tuple(
  fc.array(f32, { minLength: 6, maxLength: 6 }),
  fc.array(f32, { minLength: 3, maxLength: 3 }),
);
const update = fc.record({ values: tensorValues, exampleCount: fc.integer({ min: 1, max: 100_000 }) });

describe('FedAvgStrategy', () => {
  it('computes global + weighted mean of deltas (worked example)', () => {
    const s = createStrategy('fedavg');
    s.begin(
      tensors([
        [1, 1, 1, 1, 1, 1],
        [0, 0, 0],
      ]),
    );
    s.accumulate({
      delta: tensors([
        [1, 2, 3, 4, 5, 6],
        [1, 1, 1],
      ]),
      exampleCount: 1,
    });
    s.accumulate({
      delta: tensors([
        [4, 5, 6, 7, 8, 9],
        [-2, -2, -2],
      ]),
      exampleCount: 3,
    });
    const out = s.finish();
    // (1*1 + 3*4)/4 = 3.25 → 4.25, etc.
    expect(Array.from(out[0]!.data)).toEqual([4.25, 5.25, 6.25, 7.25, 8.25, 9.25]);
    expect(Array.from(out[1]!.data)).toEqual([-1.25, -1.25, -1.25]);
    expect(out.map((t) => t.name)).toEqual(['a.weight', 'a.bias']);
    expect(out[0]!.shape).toEqual([2, 3]);
  });

  it('matches an independent weighted-average computation', () => {
    fc.assert(
      fc.property(tensorValues, fc.array(update, { minLength: 1, maxLength: 6 }), (g, us) => {
        const global = tensors(g);
        const updates = us.map((u) => ({ delta: tensors(u.values), exampleCount: u.exampleCount }));
        const s = new FedAvgStrategy();
        s.begin(global);
        for (const u of updates) s.accumulate(u);
        const out = s.finish();
        const ref = reference(global, updates);
        out.forEach((t, i) => {
          Array.from(t.data).forEach((v, j) => expect(v).toBeCloseTo(ref[i]![j]!, 4));
        });
      }),
    );
  });

  it('gives byte-identical results for any arrival order once folded in siteId order', () => {
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
            const s = createStrategy('fedavg');
            s.begin(tensors(g));
            for (const a of sorted)
              s.accumulate({ delta: tensors(a.u.values), exampleCount: a.u.exampleCount });
            const out = s.finish();
            return new Uint8Array(Buffer.concat(out.map((t) => Buffer.from(t.data.buffer))));
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

  it('rejects a delta whose tensors do not match the global', () => {
    const s = new FedAvgStrategy();
    s.begin(
      tensors([
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ]),
    );
    const bad = [{ name: 'a.weight', shape: [2, 3], data: new Float32Array(6) }];
    expect(() => s.accumulate({ delta: bad, exampleCount: 1 })).toThrow(/delta has 1 tensors/);
    try {
      s.accumulate({ delta: bad, exampleCount: 1 });
    } catch (e) {
      expect(isFedsslError(e, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
    }
    expect(() =>
      s.accumulate({
        delta: tensors([
          [0, 0, 0, 0, 0, 0],
          [0, 0, 0],
        ]),
        exampleCount: 0,
      }),
    ).toThrow(/exampleCount/);
  });

  it('refuses to finish with no updates and unknown strategy names', () => {
    const s = new FedAvgStrategy();
    s.begin(
      tensors([
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ]),
    );
    expect(() => s.finish()).toThrow(/without any accumulated update/);
    expect(() => createStrategy('median')).toThrow('unknown strategy "median"; known: fedavg');
  });
});
