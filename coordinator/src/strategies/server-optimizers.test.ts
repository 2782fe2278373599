import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError, isFedsslError } from '@fedssl/shared/errors';
import { PlaintextPool } from '../uploads/plaintext-pool';
import { aggregateRound, StrategyStateStore } from './aggregate-round';
import { ClippingStrategy } from './clipping';
import { weightedMeanDelta } from './fedavg';
import { createStrategy, type AggregationInput, type AggregationOutput, type Strategy } from './index';
import { scratch, sources, tensors, tensorValues, update, type PlainUpdate } from './test-support';

/*
 * FedAvgM and FedAdam write their server step straight into float32 outputs (state read as
 * views, sums given back to the pool). The implementations they replaced (f0b8027), copied
 * verbatim below, are the reference: every weight and state bit must be the same.
 */

function legacyStateSlots(
  global: NamedTensors,
  state: NamedTensors | null,
  prefixes: readonly string[],
): Float64Array[][] {
  return prefixes.map((_, p) =>
    global.map((g, t) => {
      const out = new Float64Array(g.data.length);
      if (state) {
        const s = state[p * global.length + t]!;
        for (let i = 0; i < out.length; i++) out[i] = s.data[i]!;
      }
      return out;
    }),
  );
}

function legacySlotsToState(global: NamedTensors, prefixes: readonly string[], slots: Float64Array[][]) {
  return prefixes.flatMap((prefix, p) =>
    global.map((g, t) => ({
      name: `${prefix}.${g.name}`,
      shape: g.shape.slice(),
      data: Float32Array.from(slots[p]![t]!),
    })),
  );
}

function legacyApplyStep(global: NamedTensors, step: Float64Array[], factor = 1): NamedTensors {
  return global.map((g, t) => {
    const s = step[t]!;
    const data = new Float32Array(g.data.length);
    for (let i = 0; i < data.length; i++) data[i] = g.data[i]! + factor * s[i]!;
    return { name: g.name, shape: g.shape.slice(), data };
  });
}

class LegacyFedAvgM implements Strategy {
  readonly name = 'fedavgm';
  readonly stateful = true;
  constructor(private readonly o: { serverLearningRate: number; serverMomentum: number }) {}
  aggregate(input: AggregationInput): AggregationOutput {
    const { serverLearningRate: eta, serverMomentum: beta } = this.o;
    const [v] = legacyStateSlots(input.global, input.state, ['momentum']) as [Float64Array[]];
    // No buffers: the legacy strategy never gave its sums back.
    const mean = weightedMeanDelta({ global: input.global, updates: input.updates });
    const stored = v.map((vt, t) => {
      const d = mean[t]!;
      const out = new Float64Array(vt.length);
      for (let i = 0; i < vt.length; i++) out[i] = Math.fround(beta * vt[i]! + d[i]!);
      return out;
    });
    return {
      weights: legacyApplyStep(input.global, stored, eta),
      state: legacySlotsToState(input.global, ['momentum'], [stored]),
    };
  }
}

interface AdamOptions {
  serverLearningRate: number;
  beta1: number;
  beta2: number;
  tau: number;
}

class LegacyFedAdam implements Strategy {
  readonly name = 'fedadam';
  readonly stateful = true;
  constructor(private readonly o: AdamOptions) {}
  aggregate(input: AggregationInput): AggregationOutput {
    const { serverLearningRate: eta, beta1, beta2, tau } = this.o;
    const [m, v] = legacyStateSlots(input.global, input.state, ['m', 'v']) as [
      Float64Array[],
      Float64Array[],
    ];
    const delta = weightedMeanDelta({ global: input.global, updates: input.updates });
    const step = delta.map((d, t) => {
      const mt = m[t]!;
      const vt = v[t]!;
      const out = new Float64Array(d.length);
      for (let i = 0; i < d.length; i++) {
        const di = d[i]!;
        mt[i] = Math.fround(beta1 * mt[i]! + (1 - beta1) * di);
        vt[i] = Math.fround(beta2 * vt[i]! + (1 - beta2) * di * di);
        out[i] = mt[i]! / (Math.sqrt(vt[i]!) + tau);
      }
      return out;
    });
    return {
      weights: legacyApplyStep(input.global, step, eta),
      state: legacySlotsToState(input.global, ['m', 'v'], [m, v]),
    };
  }
}

/** Every byte of a tensor list, with its names: equal only when every bit is. */
function bits(ts: NamedTensors | null): [string, number[]][] | null {
  return (
    ts &&
    ts.map((t) => [t.name, Array.from(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))])
  );
}

/** Where two tensor lists first differ in their bytes (`name[index]: got vs want`), else null. */
function firstDifference(got: NamedTensors, want: NamedTensors): string | null {
  for (let t = 0; t < want.length; t++) {
    const [g, w] = [got[t]!, want[t]!];
    const gb = new Uint32Array(g.data.buffer, g.data.byteOffset, g.data.length);
    const wb = new Uint32Array(w.data.buffer, w.data.byteOffset, w.data.length);
    if (g.name !== w.name || gb.length !== wb.length)
      return `${g.name}[${gb.length}] vs ${w.name}[${wb.length}]`;
    for (let i = 0; i < wb.length; i++) {
      if (gb[i] !== wb[i]) return `${w.name}[${i}]: ${g.data[i]} vs ${w.data[i]}`;
    }
  }
  return null;
}

/** A real plaintext pool that records what it lends and gets back, lending stale (NaN) bytes. */
function recordingPool() {
  const pool = new PlaintextPool(() => true);
  const lent: ArrayBufferLike[] = [];
  const out = new Set<ArrayBufferLike>();
  return {
    lent,
    pool,
    /** Lent and not given back yet. */
    outstanding: () => out.size,
    acquire(bytes: number) {
      const b = pool.acquire(bytes).fill(0xff);
      if (out.has(b.buffer)) throw new Error('the pool lent a buffer that is still in use');
      lent.push(b.buffer);
      out.add(b.buffer);
      return b;
    },
    recycle(views: Iterable<ArrayBufferView>) {
      const list = [...views];
      for (const v of list) out.delete(v.buffer);
      pool.recycle(list);
    },
  };
}

const momentumOptions = fc.record({
  serverLearningRate: fc.double({ min: 0.1, max: 4, noNaN: true }),
  serverMomentum: fc.double({ min: 0, max: 0.99, noNaN: true }),
});
const adamOptions = fc.record({
  serverLearningRate: fc.double({ min: 1e-3, max: 1, noNaN: true }),
  beta1: fc.double({ min: 0, max: 0.99, noNaN: true }),
  beta2: fc.double({ min: 0.5, max: 0.999, noNaN: true }),
  tau: fc.double({ min: 1e-6, max: 0.1, noNaN: true }),
});
const rounds = fc.array(fc.array(update, { minLength: 1, maxLength: 9 }), { minLength: 1, maxLength: 4 });

type Pair = { name: string; fresh: () => Strategy; legacy: () => Strategy };
const pairs: fc.Arbitrary<Pair> = fc.oneof(
  momentumOptions.map((o) => ({
    name: `fedavgm ${JSON.stringify(o)}`,
    fresh: () => createStrategy({ name: 'fedavgm', ...o }),
    legacy: () => new LegacyFedAvgM(o),
  })),
  adamOptions.map((o) => ({
    name: `fedadam ${JSON.stringify(o)}`,
    fresh: () => createStrategy({ name: 'fedadam', ...o }),
    legacy: () => new LegacyFedAdam(o),
  })),
);

/** Runs both over the same rounds (each from its own previous weights and state); returns the bits. */
function runBoth(pair: Pair, g: number[][], rs: PlainUpdate[][], order: (n: number) => number[]) {
  const pool = recordingPool();
  const fresh = pair.fresh();
  const legacy = pair.legacy();
  let a: AggregationOutput = { weights: tensors(g), state: null };
  let b: AggregationOutput = { weights: tensors(g), state: null };
  const out: { fresh: unknown[]; legacy: unknown[] } = { fresh: [], legacy: [] };
  for (const r of rs) {
    const ups = order(r.length).map((k) => r[k]!);
    const base = a.state;
    a = fresh.aggregate({
      global: a.weights,
      updates: sources(ups),
      state: base,
      scratchDir: '/nonexistent',
      buffers: pool,
    });
    // As aggregateRound: the base state's memory goes back once the new state exists.
    if (base) pool.recycle(base.map((t) => t.data));
    b = legacy.aggregate({
      global: b.weights,
      updates: sources(ups),
      state: b.state,
      scratchDir: '/nonexistent',
    });
    out.fresh.push([bits(a.weights), bits(a.state)]);
    out.legacy.push([bits(b.weights), bits(b.state)]);
  }
  return { ...out, pool };
}

/**
 * A 40 000-value model's worth of random rounds (xorshift32, deterministic): magnitudes from
 * 1e-7 to 10 so that rounding boundaries are crossed often, every 97th coordinate −0 in every
 * update (a −0 mean) and every 89th +0 — ulp-level differences the 9-value property tests
 * would rarely meet.
 */
function largeRounds(seed: number, roundCount: number, sites: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const shapes = [
    { name: 'conv.weight', shape: [100, 300] },
    { name: 'conv.bias', shape: [10_000] },
  ];
  const values = () =>
    shapes.map((s) =>
      Float32Array.from({ length: s.shape[0]! * (s.shape[1] ?? 1) }, (_, i) =>
        i % 97 === 0 ? -0 : i % 89 === 0 ? 0 : (next() - 0.5) * 10 ** (next() * 8 - 7),
      ),
    );
  const named = (data: Float32Array[]): NamedTensors =>
    shapes.map((s, t) => ({ name: s.name, shape: s.shape.slice(), data: data[t]! }));
  const global = named(values());
  const rounds = Array.from({ length: roundCount }, () =>
    Array.from({ length: sites }, (_, k) => ({
      delta: named(values()),
      exampleCount: 1 + Math.floor(next() * 5000),
      k,
    })),
  );
  const toSources = (us: (typeof rounds)[number]) =>
    us.map((u) => ({ siteId: `site-${u.k}`, exampleCount: u.exampleCount, readDelta: () => u.delta }));
  return { global, rounds, toSources };
}

describe('FedAvgM and FedAdam on FedAvg’s pooled fold', () => {
  it('give bit-identical weights and state to the implementations they replaced, round after round', () => {
    fc.assert(
      fc.property(pairs, tensorValues, rounds, (pair, g, rs) => {
        const run = runBoth(pair, g, rs, (n) => [...Array(n).keys()]);
        expect(run.fresh).toEqual(run.legacy);
        // Per round the float64 sums and the new state are borrowed; everything but the last
        // state comes back, and the pool lends the same few buffers again.
        expect(run.pool.lent).toHaveLength(2 * rs.length);
        expect(run.pool.outstanding()).toBe(1);
        expect(new Set(run.pool.lent).size).toBeLessThanOrEqual(3);
        expect(run.pool.pool.idleBytes).toBeGreaterThanOrEqual(8 * 9);
      }),
      { numRuns: 200 },
    );
  });

  it('give bit-identical weights and state on a 40 000-value model, −0 and all', () => {
    const cases: Pair[] = [
      { serverLearningRate: 1, serverMomentum: 0.9 },
      { serverLearningRate: 2, serverMomentum: 0 },
      { serverLearningRate: 1, serverMomentum: 0.5 },
    ]
      .map((o) => ({
        name: 'fedavgm',
        fresh: () => createStrategy({ name: 'fedavgm', ...o }),
        legacy: (): Strategy => new LegacyFedAvgM(o),
      }))
      .concat(
        [
          { serverLearningRate: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
          { serverLearningRate: 0.1, beta1: 0, beta2: 0.5, tau: 1e-6 },
        ].map((o) => ({
          name: 'fedadam',
          fresh: () => createStrategy({ name: 'fedadam', ...o }),
          legacy: (): Strategy => new LegacyFedAdam(o),
        })),
      );
    cases.forEach((pair, c) => {
      const { global, rounds: rs, toSources } = largeRounds(1000 + c, 3, 6);
      const pool = recordingPool();
      const fresh = pair.fresh();
      const legacy = pair.legacy();
      let a: AggregationOutput = { weights: global, state: null };
      let b: AggregationOutput = { weights: global, state: null };
      for (const us of rs) {
        a = fresh.aggregate({
          global: a.weights,
          updates: toSources(us),
          state: a.state,
          scratchDir: '/nonexistent',
          buffers: pool,
        });
        b = legacy.aggregate({
          global: b.weights,
          updates: toSources(us),
          state: b.state,
          scratchDir: '/nonexistent',
        });
        // Compared as bytes: −0 and +0 differ, as they would in the state file.
        expect(firstDifference(a.weights, b.weights)).toBeNull();
        expect(firstDifference(a.state!, b.state!)).toBeNull();
      }
    });
  });

  it('stay bit-identical to the old ones in any order the updates come in', () => {
    fc.assert(
      fc.property(pairs, tensorValues, rounds, fc.nat(), (pair, g, rs, seed) => {
        // A deterministic shuffle per round size (as updates might arrive).
        const shuffled = (n: number) => {
          const idx = [...Array(n).keys()];
          let x = (seed * 2654435761 + n) >>> 0 || 1;
          for (let i = n - 1; i > 0; i--) {
            x ^= x << 13;
            x ^= x >>> 17;
            x ^= x << 5;
            const j = (x >>> 0) % (i + 1);
            [idx[i], idx[j]] = [idx[j]!, idx[i]!];
          }
          return idx;
        };
        // (The engine passes them in siteId order; the fold is exact only up to that order.)
        const run = runBoth(pair, g, rs, shuffled);
        expect(run.fresh).toEqual(run.legacy);
      }),
      { numRuns: 100 },
    );
  });

  it('apply clipNorm to each delta before the fold, bit-identically to the old ones', () => {
    fc.assert(
      fc.property(
        pairs,
        tensorValues,
        rounds,
        fc.double({ min: 0.01, max: 20, noNaN: true }),
        (pair, g, rs, c) => {
          const clipped: Pair = {
            name: pair.name,
            fresh: () => new ClippingStrategy(pair.fresh(), c),
            legacy: () => new ClippingStrategy(pair.legacy(), c),
          };
          const run = runBoth(clipped, g, rs, (n) => [...Array(n).keys()]);
          expect(run.fresh).toEqual(run.legacy);
        },
      ),
      { numRuns: 100 },
    );
    // And clipping does change the result when a delta is over the norm.
    const big: PlainUpdate = {
      values: [
        [100, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ],
      exampleCount: 1,
    };
    const g = [
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0],
    ];
    const plainOut = createStrategy({ name: 'fedavgm', serverMomentum: 0 }).aggregate({
      global: tensors(g),
      updates: sources([big]),
      state: null,
      scratchDir: '/nonexistent',
    });
    const clipOut = createStrategy({ name: 'fedavgm', serverMomentum: 0, clipNorm: 2 }).aggregate({
      global: tensors(g),
      updates: sources([big]),
      state: null,
      scratchDir: '/nonexistent',
    });
    expect(plainOut.weights[0]!.data[0]).toBe(100);
    expect(clipOut.weights[0]!.data[0]).toBe(2);
  });

  it('leave the aggregate and the stored state untouched when an update is rejected while folding', () => {
    fc.assert(
      fc.property(
        pairs,
        tensorValues,
        fc.array(update, { minLength: 2, maxLength: 9 }),
        fc.nat(),
        (pair, g, us, at) => {
          const bad = at % us.length;
          const pool = recordingPool();
          const strategy = pair.fresh();
          // A round that gives the server some state first.
          const first = strategy.aggregate({
            global: tensors(g),
            updates: sources(us),
            state: null,
            scratchDir: '/nonexistent',
            buffers: pool,
          });
          const stateBefore = bits(first.state);
          const updates = sources(us).map((s, k) =>
            k === bad
              ? {
                  ...s,
                  readDelta: (): NamedTensors => {
                    throw new FedsslError('UPDATE_NOT_FINITE', `update of ${s.siteId} is not finite`);
                  },
                }
              : s,
          );
          expect(() =>
            strategy.aggregate({
              global: first.weights,
              updates,
              state: first.state,
              scratchDir: '/nonexistent',
              buffers: pool,
            }),
          ).toThrow(`update of site-${String(bad).padStart(3, '0')} is not finite`);
          expect(bits(first.state)).toEqual(stateBefore);
          // Its float64 sums went back to the pool; only the first round's state is still lent.
          expect(pool.outstanding()).toBe(1);
          // Aggregating again without it, on the same pool (stale sums and plaintext), gives what
          // the old implementation gives without it.
          const rest = us.filter((_, k) => k !== bad);
          const again = strategy.aggregate({
            global: first.weights,
            updates: sources(rest),
            state: first.state,
            scratchDir: '/nonexistent',
            buffers: pool,
          });
          const legacy = pair.legacy();
          const l1 = legacy.aggregate({
            global: tensors(g),
            updates: sources(us),
            state: null,
            scratchDir: '/nonexistent',
          });
          const l2 = legacy.aggregate({
            global: l1.weights,
            updates: sources(rest),
            state: l1.state,
            scratchDir: '/nonexistent',
          });
          expect([bits(again.weights), bits(again.state)]).toEqual([bits(l2.weights), bits(l2.state)]);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('refuse a delta with the wrong layout before any step, naming it', () => {
    const g = [
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0],
    ];
    const wrong = {
      siteId: 'site-x',
      exampleCount: 1,
      readDelta: (): NamedTensors => [{ name: 'a.weight', shape: [6], data: new Float32Array(6) }],
    };
    for (const name of ['fedavgm', 'fedadam']) {
      try {
        createStrategy(name).aggregate({
          global: tensors(g),
          updates: [wrong],
          state: null,
          scratchDir: '/nonexistent',
        });
        expect.unreachable();
      } catch (e) {
        expect(isFedsslError(e, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
        expect((e as Error).message).toBe('delta has 1 tensors, global has 2');
      }
    }
  });

  it('continue bit-identically across a coordinator restart through the state file, with pooled sums', () => {
    fc.assert(
      fc.property(
        pairs,
        tensorValues,
        fc.array(fc.array(update, { minLength: 1, maxLength: 6 }), { minLength: 2, maxLength: 4 }),
        (pair, g, rs) => {
          const dataDir = scratch();
          const setting = JSON.parse(pair.name.slice(pair.name.indexOf(' ') + 1)) as Record<string, number>;
          const name = pair.name.slice(0, pair.name.indexOf(' '));
          const pool = recordingPool();
          let w = tensors(g);
          const got: unknown[] = [];
          for (let r = 1; r <= rs.length; r++) {
            // Each round reads its base state back from disk, as a restarted coordinator does.
            const out = aggregateRound({
              strategy: { name, ...setting } as Parameters<typeof aggregateRound>[0]['strategy'],
              dataDir,
              runId: 'run-1',
              round: r,
              baseVersion: `run-1.r${r - 1}`,
              version: `run-1.r${r}`,
              global: w,
              updates: sources(rs[r - 1]!),
              buffers: pool,
            });
            w = out.weights;
            got.push([bits(w), bits(new StrategyStateStore(dataDir, 'run-1').load(`run-1.r${r}`))]);
          }
          // The old implementation with its state kept in memory, never written.
          const legacy = pair.legacy();
          let l: AggregationOutput = { weights: tensors(g), state: null };
          const want = rs.map((us) => {
            l = legacy.aggregate({
              global: l.weights,
              updates: sources(us),
              state: l.state,
              scratchDir: '/nonexistent',
            });
            return [bits(l.weights), bits(l.state)];
          });
          expect(got).toEqual(want);
          // Sums, new state, base state read from disk: all borrowed, all given back.
          expect(pool.lent).toHaveLength(2 * rs.length + (rs.length - 1));
          expect(pool.outstanding()).toBe(0);
        },
      ),
      { numRuns: 30 },
    );
  });

  it('refuse a corrupted state file read into pooled memory, and give that memory back', () => {
    const dataDir = scratch();
    const pool = recordingPool();
    const round = (r: number, global: NamedTensors) =>
      aggregateRound({
        strategy: { name: 'fedadam', serverLearningRate: 0.5 },
        dataDir,
        runId: 'run-1',
        round: r,
        baseVersion: `run-1.r${r - 1}`,
        version: `run-1.r${r}`,
        global,
        updates: sources([
          {
            values: [
              [1, 2, 3, 4, 5, 6],
              [1, 1, 1],
            ],
            exampleCount: 3,
          },
        ]),
        buffers: pool,
      });
    const first = round(
      1,
      tensors([
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0],
      ]),
    );
    const file = new StrategyStateStore(dataDir, 'run-1').path('run-1.r1');
    const bytes = readFileSync(file);
    bytes[bytes.length - 8]! ^= 0x01; // in v.a.bias (the last 4 bytes are padding)
    writeFileSync(file, bytes);
    try {
      round(2, first.weights);
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'CODEC_HASH_MISMATCH')).toBe(true);
      expect((e as Error).message).toBe('weights: data section SHA-256 does not match the manifest');
    }
    expect(pool.outstanding()).toBe(0);
  });
});
