import { describe, it, expect } from 'vitest';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isFedsslError } from '@fedssl/shared/errors';
import { aggregateRound, StrategyStateStore } from './aggregate-round';
import { strategyConfigSchema, normalizeStrategyConfig } from './config';
import { strategyLabel } from './index';
import { plain, scratch, sources, tensors, type PlainUpdate } from './test-support';

const G = [
  [0.5, -1, 2, 0, 0, 1],
  [0, 0, 0],
];
const ROUNDS: PlainUpdate[][] = [1, 2, 3].map((r) => [
  {
    values: [
      [r, -r, 0.5, 0, 1, 2],
      [1, 0, -1],
    ],
    exampleCount: 10,
  },
  {
    values: [
      [0.1 * r, 3, -2, 1, 0, 0],
      [0, 2, 0],
    ],
    exampleCount: 30,
  },
]);

function runRounds(dataDir: string, strategy: Parameters<typeof aggregateRound>[0]['strategy'], from = 1) {
  let w = G;
  const bytes: Buffer[] = [];
  for (let r = 1; r <= ROUNDS.length; r++) {
    const out = aggregateRound({
      strategy,
      dataDir,
      runId: 'run-1',
      round: r,
      baseVersion: `run-1.r${r - 1}`,
      version: `run-1.r${r}`,
      global: tensors(w),
      updates: sources(ROUNDS[r - 1]!),
    });
    w = plain(out.weights);
    if (r >= from) bytes.push(Buffer.concat(out.weights.map((t) => Buffer.from(t.data.buffer))));
  }
  return bytes;
}

describe('aggregateRound', () => {
  it('persists FedAdam state per version so a restarted coordinator continues bit-identically', () => {
    const dir = scratch();
    const uninterrupted = runRounds(dir, { name: 'fedadam', serverLearningRate: 0.5 });
    const store = new StrategyStateStore(dir, 'run-1');
    expect([1, 2, 3].map((r) => existsSync(store.path(`run-1.r${r}`)))).toEqual([true, true, true]);
    // "Restart": a fresh directory that holds only what was on disk after round 1, then
    // rounds 2 and 3 recomputed from it.
    const restarted = scratch();
    mkdirSync(join(restarted, 'strategy-state', 'run-1'), { recursive: true });
    writeFileSync(
      new StrategyStateStore(restarted, 'run-1').path('run-1.r1'),
      readFileSync(store.path('run-1.r1')),
    );
    let w = plain(
      aggregateRound({
        strategy: { name: 'fedadam', serverLearningRate: 0.5 },
        dataDir: scratch(),
        runId: 'run-1',
        round: 1,
        baseVersion: 'run-1.r0',
        version: 'run-1.r1',
        global: tensors(G),
        updates: sources(ROUNDS[0]!),
      }).weights,
    );
    const again: Buffer[] = [];
    for (let r = 2; r <= 3; r++) {
      const out = aggregateRound({
        strategy: { name: 'fedadam', serverLearningRate: 0.5 },
        dataDir: restarted,
        runId: 'run-1',
        round: r,
        baseVersion: `run-1.r${r - 1}`,
        version: `run-1.r${r}`,
        global: tensors(w),
        updates: sources(ROUNDS[r - 1]!),
      });
      w = plain(out.weights);
      again.push(Buffer.concat(out.weights.map((t) => Buffer.from(t.data.buffer))));
    }
    expect(again).toEqual(uninterrupted.slice(1));
    expect(readFileSync(new StrategyStateStore(restarted, 'run-1').path('run-1.r3'))).toEqual(
      readFileSync(store.path('run-1.r3')),
    );
  });

  it('refuses to continue a stateful strategy whose base version has no saved state', () => {
    try {
      aggregateRound({
        strategy: 'fedavgm',
        dataDir: scratch(),
        runId: 'run-1',
        round: 2,
        baseVersion: 'run-1.r1',
        version: 'run-1.r2',
        global: tensors(G),
        updates: sources(ROUNDS[0]!),
      });
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'STRATEGY_STATE_INVALID')).toBe(true);
      expect((e as Error).message).toBe('fedavgm: no server state saved with base version run-1.r1');
    }
  });

  it('saves no state for stateless strategies and clears scratch leftovers of the run', () => {
    const dir = scratch();
    mkdirSync(join(dir, 'aggregation-tmp', 'run-1.2.deadbeef', 'median-spill'), { recursive: true });
    mkdirSync(join(dir, 'aggregation-tmp', 'run-2.1.cafe'), { recursive: true });
    runRounds(dir, 'median');
    expect(existsSync(join(dir, 'strategy-state'))).toBe(false);
    expect(readdirSync(join(dir, 'aggregation-tmp'))).toEqual(['run-2.1.cafe']);
  });
});

describe('strategy run-config setting', () => {
  it('accepts plain names and objects, fills defaults and labels them', () => {
    expect(strategyConfigSchema.parse('fedavg')).toBe('fedavg');
    expect(normalizeStrategyConfig('fedavg')).toEqual({ name: 'fedavg' });
    expect(normalizeStrategyConfig({ name: 'fedadam' })).toEqual({
      name: 'fedadam',
      serverLearningRate: 0.01,
      beta1: 0.9,
      beta2: 0.99,
      tau: 1e-3,
    });
    expect(normalizeStrategyConfig({ name: 'trimmed-mean', clipNorm: 5 })).toEqual({
      name: 'trimmed-mean',
      beta: 0.1,
      clipNorm: 5,
    });
    expect(strategyLabel({ name: 'fedavgm', clipNorm: 3 })).toBe('fedavgm+clip');
    expect(strategyLabel('median')).toBe('median');
  });

  it('rejects unknown names and options', () => {
    expect(strategyConfigSchema.safeParse('krum').error?.issues[0]?.message).toBe(
      'expected one of fedavg, fedavgm, fedadam, median, trimmed-mean or an object with such a name',
    );
    expect(strategyConfigSchema.safeParse({ name: 'median', beta: 0.1 }).success).toBe(false);
    expect(strategyConfigSchema.safeParse({ name: 'fedavgm', serverMomentum: 1 }).success).toBe(false);
  });
});
