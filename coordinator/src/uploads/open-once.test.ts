import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { NamedTensors } from '@fedssl/shared/codec';
import { mulberry32, sharedParamSpecs, shapeSize, type ModelConfig } from '@fedssl/shared/model';
import type { StrategyConfigInput } from '../strategies';
import { FederationFixture, testModel, testRunBody, type FakeAgent } from '../runs/federation.fixture';

/** Seeded, non-constant delta: summation order would show in the last bits of a fold. */
function noisyDelta(model: ModelConfig, seed: number, poison = false): NamedTensors {
  const rand = mulberry32(seed);
  return sharedParamSpecs(model).map((s, t) => {
    const data = new Float32Array(shapeSize(s.shape));
    for (let i = 0; i < data.length; i++) data[i] = (rand() - 0.5) * 0.02;
    if (poison && t === 0) data[0] = NaN;
    return { name: s.name, shape: s.shape.slice(), data };
  });
}

/** Arrival order on purpose not siteId order: [siteId, exampleCount, delta seed]. */
const SITES: [string, number, number][] = [
  ['site-c', 7, 1],
  ['site-a', 30, 2],
  ['site-b', 11, 3],
];

interface RoundOptions {
  /** Restart the coordinator after this many commits. */
  restartAfter?: number;
  openedBudgetBytes?: number;
  strategy?: StrategyConfigInput;
  /** Make the first `publishFailures` publications fail with ENOSPC (aggregation retried). */
  publishFailures?: number;
}

const fixtures: FederationFixture[] = [];
afterEach(async () => {
  for (const f of fixtures.splice(0)) await f.close();
});

/** Counts `UpdateStore.openEnvelope` calls of the fixture's current store (rebuilt by a restart). */
function countOpens(f: FederationFixture): { count: () => number } {
  const spy = vi.spyOn(f.updates, 'openEnvelope');
  return { count: () => spy.mock.calls.length };
}

/** One round of the three sites through uploads, engine and strategy; the published weights' digest. */
async function oneRound(o: RoundOptions = {}) {
  const f = await FederationFixture.create(
    undefined,
    o.openedBudgetBytes === undefined ? {} : { openedBudgetBytes: o.openedBudgetBytes },
  );
  fixtures.push(f);
  const agents: FakeAgent[] = SITES.map(([id, n]) => f.agent(id, n, 0));
  for (const a of agents) f.connect(a);
  await f.engine.idle();
  const run = await f.runs.create(
    testRunBody({ rounds: 1, minSites: 3, ...(o.strategy ? { strategy: o.strategy } : {}) }),
  );
  const tasks = Promise.all(agents.map((a) => a.nextTask()));
  await f.runs.start(run.id);
  const offered = await tasks;
  if (o.publishFailures) {
    const publish = f.models.publish.bind(f.models);
    let failures = o.publishFailures;
    f.models.publish = (args) => {
      if (failures-- > 0)
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return publish(args);
    };
  }
  const counters = [countOpens(f)];
  for (const [i, a] of agents.entries()) {
    if (i === o.restartAfter) {
      await f.restart();
      counters.push(countOpens(f));
      await f.engine.resumeAll();
    }
    const delta = noisyDelta(offered[i]!.model, SITES[i]![2]);
    await expect(f.upload(a.siteId, a.seal(offered[i]!, { delta }))).resolves.toMatchObject({
      accepted: true,
    });
  }
  await f.engine.idle();
  for (let k = 0; k < (o.publishFailures ?? 0); k++) {
    f.clock.advance(60_000);
    await f.engine.idle();
  }
  expect((await f.runs.get(run.id)).state).toBe('completed');
  const weights = f.models.readWeights(`${run.id}.r1`);
  const digest = createHash('sha256');
  for (const t of weights) digest.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return {
    f,
    opens: counters.map((c) => c.count()),
    digest: digest.digest('hex'),
    first: weights[0]!.data,
    base: f.models.readWeights(`${run.id}.r0`)[0]!.data,
  };
}

describe('each accepted update is opened once on the normal path', () => {
  it('commit opens it, aggregation takes it from memory; the weights are the FedAvg of the deltas', async () => {
    const r = await oneRound();
    expect(r.opens).toEqual([3]);
    expect(r.f.updates.opened.size).toBe(0);
    expect(r.f.updates.opened.bytes).toBe(0);
    // Independent computation, coordinate 0..9 of the first tensor.
    const deltas = SITES.map(([, , seed]) => noisyDelta(testModel(), seed));
    const total = SITES.reduce((n, [, w]) => n + w, 0);
    for (let i = 0; i < 10; i++) {
      const mean = SITES.reduce((s, [, w], k) => s + w * deltas[k]![0]!.data[i]!, 0) / total;
      expect(r.first[i]! - r.base[i]!).toBeCloseTo(mean, 6);
    }
  });

  it('a restart between commit and aggregation re-opens only what memory lost, with bit-identical weights', async () => {
    const normal = await oneRound();
    const restarted = await oneRound({ restartAfter: 1 });
    // Before the restart: site-c's commit. After: site-a's and site-b's commits, and site-c's
    // update opened again from its sealed file at aggregation.
    expect(restarted.opens).toEqual([1, 3]);
    expect(restarted.digest).toBe(normal.digest);
  });

  it('with no memory for opened updates every update is opened twice, same weights', async () => {
    const normal = await oneRound();
    const off = await oneRound({ openedBudgetBytes: 0 });
    expect(off.opens).toEqual([6]);
    expect(off.digest).toBe(normal.digest);
  });

  it('an aggregation retried after a failure re-opens the updates and publishes the same weights', async () => {
    const normal = await oneRound();
    const retried = await oneRound({ publishFailures: 1 });
    expect(retried.opens).toEqual([6]);
    expect(retried.digest).toBe(normal.digest);
  });

  it.each<[string, StrategyConfigInput]>([
    ['trimmed mean', { name: 'trimmed-mean', beta: 0.34 }],
    ['clipped median', { name: 'median', clipNorm: 0.5 }],
    ['FedAdam', 'fedadam'],
  ])('%s: the strategy gets every update once, as it would from the files', async (_name, strategy) => {
    const normal = await oneRound({ strategy });
    const off = await oneRound({ strategy, openedBudgetBytes: 0 });
    const restarted = await oneRound({ strategy, restartAfter: 2 });
    expect(normal.opens).toEqual([3]);
    expect(off.digest).toBe(normal.digest);
    expect(restarted.digest).toBe(normal.digest);
  });

  it('the next round decrypts into the buffers the last aggregation gave back, with the same weights', async () => {
    /** Two rounds of the three sites; round 2's published digest and the pool's idle bytes after each commit. */
    const twoRounds = async (openedBudgetBytes?: number) => {
      const f = await FederationFixture.create(
        undefined,
        openedBudgetBytes === undefined ? {} : { openedBudgetBytes },
      );
      fixtures.push(f);
      const agents = SITES.map(([id, n]) => f.agent(id, n, 0));
      for (const a of agents) f.connect(a);
      await f.engine.idle();
      const run = await f.runs.create(testRunBody({ rounds: 2, minSites: 3 }));
      let tasks = Promise.all(agents.map((a) => a.nextTask()));
      await f.runs.start(run.id);
      const idle: number[] = [];
      for (let round = 1; round <= 2; round++) {
        const offered = await tasks;
        if (round === 1) tasks = Promise.all(agents.map((a) => a.nextTask()));
        for (const [i, a] of agents.entries()) {
          const delta = noisyDelta(offered[i]!.model, SITES[i]![2] + 10 * round);
          await f.upload(a.siteId, a.seal(offered[i]!, { delta }));
          idle.push(f.updates.opened.buffers.idleBytes);
        }
        await f.engine.idle();
      }
      expect((await f.runs.get(run.id)).state).toBe('completed');
      const digest = createHash('sha256');
      for (const t of f.models.readWeights(`${run.id}.r2`))
        digest.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      return { idle, pooled: f.updates.opened.buffers.idleBytes, digest: digest.digest('hex') };
    };
    const pooled = await twoRounds();
    const fresh = await twoRounds(0);
    // Round 1 allocates; its aggregation (within the last commit) gives the three plaintext
    // buffers back, and FedAvg's sums; round 2 takes one plaintext buffer per commit and the
    // sums buffer, and its aggregation gives them all back again.
    const [a, b, after1, c2a, c2b, after2] = pooled.idle as [number, number, number, number, number, number];
    expect([a, b]).toEqual([0, 0]);
    const one = after1 - c2a;
    expect(one).toBeGreaterThan(0);
    expect(c2a - c2b).toBe(one);
    expect(after1).toBeGreaterThan(3 * one); // the sums too
    expect(after2).toBe(after1);
    expect(pooled.pooled).toBe(after1);
    expect(fresh.idle.every((x) => x === 0) && fresh.pooled === 0).toBe(true);
    expect(pooled.digest).toBe(fresh.digest);
  });

  it('a rejected update is never kept, and the round aggregates only the accepted ones', async () => {
    const f = await FederationFixture.create();
    fixtures.push(f);
    const agents = SITES.map(([id, n]) => f.agent(id, n, 0));
    for (const a of agents) f.connect(a);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2 }));
    const tasks = Promise.all(agents.map((a) => a.nextTask()));
    await f.runs.start(run.id);
    const offered = await tasks;
    const [c, a, b] = agents as [FakeAgent, FakeAgent, FakeAgent];
    const model = offered[0]!.model;
    await expect(
      f.upload(c.siteId, c.seal(offered[0]!, { delta: noisyDelta(model, 1, true) })),
    ).rejects.toMatchObject({
      code: 'UPDATE_NOT_FINITE',
    });
    expect(f.updates.opened.size).toBe(0);
    await f.upload(a.siteId, a.seal(offered[1]!, { delta: noisyDelta(model, 2) }));
    expect(f.updates.opened.size).toBe(1);
    await f.upload(b.siteId, b.seal(offered[2]!, { delta: noisyDelta(model, 3) }));
    await f.engine.idle();
    expect((await f.runs.get(run.id)).state).toBe('completed');
    expect(f.updates.opened.size).toBe(0);
    const base = f.models.readWeights(`${run.id}.r0`)[0]!.data;
    const next = f.models.readWeights(`${run.id}.r1`)[0]!.data;
    const [da, db] = [noisyDelta(model, 2)[0]!.data, noisyDelta(model, 3)[0]!.data];
    for (let i = 0; i < 10; i++) expect(next[i]! - base[i]!).toBeCloseTo((30 * da[i]! + 11 * db[i]!) / 41, 6);
  });
});
