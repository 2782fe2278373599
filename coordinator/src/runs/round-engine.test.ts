import { describe, it, expect, afterEach } from 'vitest';
import { existsSync } from 'node:fs';
import { Writable } from 'node:stream';
import pino from 'pino';
import { verifySignedModelManifest } from '@fedssl/shared/crypto';

import { FederationFixture, testRunBody, type FakeAgent } from './federation.fixture';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

/** The flat weights of a published version. */
function flat(f: FederationFixture, version: string): Float64Array {
  return Float64Array.from(f.models.readWeights(version).flatMap((t) => Array.from(t.data)));
}

async function tasksOf(...agents: FakeAgent[]) {
  return Promise.all(
    agents.map((a) => (a.tasks.length > 0 ? Promise.resolve(a.tasks.at(-1)!) : a.nextTask())),
  );
}

describe('RoundEngine', () => {
  let f: FederationFixture;
  afterEach(() => f?.close());

  it('runs two rounds to completion, FedAvg-weighting real sealed deltas, publishing verifiable manifests', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 100, 0.01);
    const b = f.agent('site-b', 300, -0.02);
    f.connect(a);
    await f.engine.idle();
    f.connect(b);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 2, minSites: 2 }));
    const ta = a.nextTask();
    const tb = b.nextTask();
    expect((await f.runs.start(run.id)).state).toBe('running');
    const r0 = `${run.id}.r0`;
    expect(f.models.getManifest(r0)).toBeDefined();

    for (const round of [1, 2]) {
      const [taskA, taskB] = round === 1 ? await Promise.all([ta, tb]) : await tasksOf(a, b);
      expect(taskA!.round).toBe(round);
      expect(taskA!.modelVersion).toBe(`${run.id}.r${round - 1}`);
      const next = round === 1 ? [a.nextTask(), b.nextTask()] : [];
      await f.upload('site-a', a.seal(taskA!));
      expect((await f.repo.getRun(run.id))!.latestModelVersion).toBe(`${run.id}.r${round - 1}`); // still waiting for b
      await f.upload('site-b', b.seal(taskB!));
      if (next.length) await Promise.all(next);
    }

    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    expect(detail.latestModelVersion).toBe(`${run.id}.r2`);
    expect(detail.rounds.map((r) => [r.round, r.attempt, r.state])).toEqual([
      [1, 1, 'published'],
      [2, 1, 'published'],
    ]);
    expect(detail.rounds[0]!.participants).toEqual([
      {
        siteId: 'site-a',
        siteName: 'Hospital site-a',
        state: 'accepted',
        exampleCount: 100,
        metrics: { loss: 0.5 },
        reason: null,
      },
      {
        siteId: 'site-b',
        siteName: 'Hospital site-b',
        state: 'accepted',
        exampleCount: 300,
        metrics: { loss: 0.5 },
        reason: null,
      },
    ]);

    // Independent computation: each round adds (100·0.01 + 300·(−0.02)) / 400 = −0.0125 to every weight.
    const w0 = flat(f, r0);
    const w2 = flat(f, `${run.id}.r2`);
    for (let i = 0; i < w0.length; i += 97) expect(w2[i]! - w0[i]!).toBeCloseTo(-0.025, 5);

    for (const round of [0, 1, 2]) {
      const sm = f.models.getManifest(`${run.id}.r${round}`)!;
      const m = verifySignedModelManifest(sm, f.keys.keys.signing.publicKey);
      expect(m.round).toBe(round);
      if (round > 0) {
        expect(m.parentVersion).toBe(`${run.id}.r${round - 1}`);
        expect(m.sites).toEqual([
          { siteId: 'site-a', exampleCount: 100 },
          { siteId: 'site-b', exampleCount: 300 },
        ]);
        expect(detail.rounds[round - 1]!.modelSha256).toBe(m.weightsSha256);
      }
    }
    expect(f.clock.pending()).toBe(0);
  });

  it('rejects a tampered update while the round completes from the others', async () => {
    f = await FederationFixture.create();
    const agents = [f.agent('site-a', 10, 0.1), f.agent('site-b', 10, 0.2), f.agent('site-c', 10, 0.3)];
    const offered = agents.map((a) => a.nextTask());
    agents.forEach((a) => f.connect(a));
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2 }));
    await f.runs.start(run.id);
    const [ta, tb, tc] = await Promise.all(offered);

    await f.upload('site-a', agents[0]!.seal(ta!));
    const flip = (i: number, c: Uint8Array) => {
      if (i !== 1) return c;
      const copy = c.slice();
      copy[5]! ^= 0x01;
      return copy;
    };
    let code = '';
    try {
      await f.upload('site-b', agents[1]!.seal(tb!), flip);
    } catch (e) {
      code = isFedsslErrorLike(e) ? e.code : 'not a FedsslError';
    }
    expect(code).toBe('ENVELOPE_CHUNK_INVALID');
    // A replay of the honest envelope for the rejected task is refused: the task is answered.
    let replay = '';
    try {
      await f.upload('site-b', agents[1]!.seal(tb!));
    } catch (e) {
      replay = isFedsslErrorLike(e) ? e.code : 'not a FedsslError';
    }
    expect(replay).toBe('TASK_ALREADY_ANSWERED');
    await f.upload('site-c', agents[2]!.seal(tc!));

    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    const p = detail.rounds[0]!.participants;
    expect(p.map((x) => [x.siteId, x.state])).toEqual([
      ['site-a', 'accepted'],
      ['site-b', 'rejected'],
      ['site-c', 'accepted'],
    ]);
    expect(p[1]!.reason).toMatch(/^ENVELOPE_CHUNK_INVALID: /);
    const m = verifySignedModelManifest(f.models.getManifest(`${run.id}.r1`)!, f.keys.keys.signing.publicKey);
    expect(m.sites.map((s) => s.siteId)).toEqual(['site-a', 'site-c']);
    // (0.1 + 0.3) / 2 = 0.2 added: site-b's 0.2 would not change the mean, so check a weight exactly.
    const w0 = f.models.readWeights(`${run.id}.r0`)[0]!.data;
    const w1 = f.models.readWeights(`${run.id}.r1`)[0]!.data;
    expect(w1[0]! - w0[0]!).toBeCloseTo(0.2, 5);
  });

  it('waits for enough sites (logging how many), fails a round at the deadline with too few, and retries', async () => {
    const log = capture();
    f = await FederationFixture.create(log.logger);
    const a = f.agent('site-a', 5, 0.1);
    const b = f.agent('site-b', 5, 0.1);
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2, roundDeadlineSeconds: 60 }));
    await f.runs.start(run.id);
    f.connect(a);
    await f.engine.idle();
    expect(
      log.lines.filter((l) => l.msg === 'waiting for sites').map((l) => [l.online, l.waitingFor]),
    ).toEqual([
      [0, 2],
      [1, 1],
    ]);
    expect((await f.repo.latestRound(run.id))!.state).toBe('open');
    const ta = a.nextTask();
    const tb = b.nextTask();
    f.connect(b);
    await f.engine.idle();
    const [taskA, taskB] = await Promise.all([ta, tb]);
    await f.upload('site-a', a.seal(taskA));
    const retryB = b.nextTask();
    f.clock.advance(60_001);
    await f.engine.idle();

    let detail = await f.runs.get(run.id);
    expect(detail.rounds.map((r) => [r.round, r.attempt, r.state])).toEqual([
      [1, 1, 'failed'],
      [1, 2, 'training'],
    ]);
    expect(detail.rounds[0]!.reason).toBe('deadline passed with 1 accepted update(s); need 2');
    expect(detail.rounds[0]!.participants.map((p) => p.state)).toEqual(['accepted', 'dropped']);
    expect(f.transport.cancels).toEqual([
      { siteId: 'site-b', taskId: (await f.repo.listTasks(run.id, 1, 1))[1]!.id, reason: 'round failed' },
    ]);

    // The retry keeps site-a's accepted update (round-retry.test.ts) and asks only site-b again.
    const rb = await retryB;
    expect(rb.taskId).not.toBe(taskB.taskId);
    expect(rb.nonce).not.toBe(taskB.nonce);
    expect(a.tasks).toHaveLength(1);
    // The old tasks of the failed attempt can no longer be answered.
    await expect(f.upload('site-a', a.seal(taskA))).rejects.toThrow(/passed its deadline/);
    await expect(f.upload('site-b', b.seal(taskB))).rejects.toThrow(/passed its deadline/);
    await f.upload('site-b', b.seal(rb));
    detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    expect(detail.rounds.map((r) => r.state)).toEqual(['failed', 'published']);
  });

  it('keeps a round aggregating while the disk is full and publishes it once space is back, attempt 1', async () => {
    const log = capture();
    f = await FederationFixture.create(log.logger);
    const a = f.agent('site-a', 5, 0.1);
    const b = f.agent('site-b', 5, -0.1);
    f.connect(a);
    f.connect(b);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2 }));
    const tasks = Promise.all([a.nextTask(), b.nextTask()]);
    await f.runs.start(run.id);
    const [ta, tb] = await tasks;
    // The disk fills up: the next two publications fail with ENOSPC, as the file system says.
    const publish = f.models.publish.bind(f.models);
    let full = 2;
    f.models.publish = (args) => {
      if (full-- > 0)
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return publish(args);
    };
    await f.upload('site-a', a.seal(ta));
    // The last upload's commit is still an acceptance, though aggregation could not publish.
    await expect(f.upload('site-b', b.seal(tb))).resolves.toMatchObject({ accepted: true });
    await f.engine.idle();
    expect((await f.repo.latestRound(run.id))!.state).toBe('aggregating');
    f.clock.advance(1000);
    await f.engine.idle();
    expect((await f.repo.latestRound(run.id))!.state).toBe('aggregating');
    f.clock.advance(2000);
    await f.engine.idle();

    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    expect(detail.rounds.map((r) => [r.round, r.attempt, r.state])).toEqual([[1, 1, 'published']]);
    expect(detail.rounds[0]!.participants.map((p) => p.state)).toEqual(['accepted', 'accepted']);
    expect(
      log.lines.filter((l) => l.msg === 'aggregation deferred: data directory full').map((l) => l.retryInMs),
    ).toEqual([1000, 2000]);
    expect(log.lines.filter((l) => l.msg === 'round failed')).toEqual([]);
  });

  it('drops a revoked site at once and leaves its accepted update out of the aggregate', async () => {
    f = await FederationFixture.create();
    const agents = [f.agent('site-a', 10, 0.1), f.agent('site-b', 10, 0.2), f.agent('site-c', 10, 0.3)];
    const offered = agents.map((a) => a.nextTask());
    agents.forEach((a) => f.connect(a));
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2 }));
    await f.runs.start(run.id);
    const [ta, tb] = await Promise.all(offered);
    await f.upload('site-a', agents[0]!.seal(ta!));
    await f.upload('site-b', agents[1]!.seal(tb!));
    for (const id of ['site-b', 'site-c']) {
      f.sites.set(id, { ...f.sites.get(id)!, status: 'revoked' });
      f.presence.emit('revoked', id);
      await f.engine.idle();
    }
    const detail = await f.runs.get(run.id);
    const first = detail.rounds[0]!;
    expect(first.participants.map((p) => [p.siteId, p.state, p.reason])).toEqual([
      ['site-a', 'accepted', null],
      ['site-b', 'accepted', null],
      ['site-c', 'dropped', 'site revoked'],
    ]);
    expect(first.state).toBe('failed');
    expect(first.reason).toBe(
      'aggregation failed: RUN_INVALID_STATE: only 1 update(s) of enrolled sites to aggregate; need 2',
    );
    expect(f.models.getManifest(`${run.id}.r1`)).toBeUndefined();
    // The retry only counts enrolled sites, so it waits.
    expect(detail.rounds[1]).toMatchObject({ round: 1, attempt: 2, state: 'open' });
  });

  it('fails the run after three failed attempts of a round', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 5, 0.1);
    f.connect(a);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 1, roundDeadlineSeconds: 10 }));
    await f.runs.start(run.id);
    for (let i = 0; i < 3; i++) {
      f.clock.advance(10_001);
      await f.engine.idle();
    }
    const detail = await f.runs.get(run.id);
    expect(detail.rounds.map((r) => r.state)).toEqual(['failed', 'failed', 'failed']);
    expect(detail.state).toBe('failed');
    expect(detail.reason).toMatch(/^round 1 failed 3 times; last: deadline passed with 0 accepted/);
    expect(f.clock.pending()).toBe(0);
  });

  it('resumes after a restart on the same database and data dir without losing accepted updates', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.1);
    const b = f.agent('site-b', 30, 0.5);
    const ta = a.nextTask();
    const tb = b.nextTask();
    f.connect(a);
    await f.engine.idle();
    f.connect(b);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2 }));
    await f.runs.start(run.id);
    const [taskA, taskB] = await Promise.all([ta, tb]);
    await f.upload('site-a', a.seal(taskA));
    const accepted = (await f.repo.listUpdates(run.id, 1, 1))[0]!;
    expect(existsSync(accepted.envelopePath)).toBe(true);

    await f.restart();
    // The outstanding task is offered again on resume; the accepted one is not.
    const reoffered = b.nextTask();
    await f.engine.resumeAll();
    const again = await reoffered;
    expect(again.taskId).toBe(taskB.taskId);
    expect(f.transport.offers.filter((o) => o.siteId === 'site-a')).toHaveLength(1);
    expect((await f.repo.listUpdates(run.id, 1, 1)).map((u) => u.siteId)).toEqual(['site-a']);

    await f.upload('site-b', b.seal(again));
    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    const w0 = f.models.readWeights(`${run.id}.r0`)[0]!.data;
    const w1 = f.models.readWeights(`${run.id}.r1`)[0]!.data;
    expect(w1[0]! - w0[0]!).toBeCloseTo((10 * 0.1 + 30 * 0.5) / 40, 5);
  });

  it('keeps the outstanding task of a site not yet reconnected after a restart, and offers it on reconnect', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.1);
    const b = f.agent('site-b', 30, 0.5);
    const ta = a.nextTask();
    const tb = b.nextTask();
    f.connect(a);
    f.connect(b);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 2 }));
    await f.runs.start(run.id);
    const [taskA, taskB] = await Promise.all([ta, tb]);
    await f.upload('site-a', a.seal(taskA));

    // A real restart: the coordinator comes back before any agent has reconnected.
    f.transport.disconnect('site-a');
    f.transport.disconnect('site-b');
    await f.restart();
    await f.engine.resumeAll();
    await f.engine.idle();
    const tasks = await f.repo.listTasks(run.id, 1, 1);
    expect(tasks.map((t) => [t.siteId, t.state])).toEqual([
      ['site-a', 'accepted'],
      ['site-b', 'offered'],
    ]);
    expect((await f.repo.getRound(run.id, 1, 1))!.state).toBe('training');

    const reoffered = b.nextTask();
    f.connect(b);
    const again = await reoffered;
    expect(again.taskId).toBe(taskB.taskId);
    await f.upload('site-b', b.seal(again));
    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    expect(detail.rounds.map((r) => [r.round, r.attempt, r.state])).toEqual([[1, 1, 'published']]);
  });

  it('refuses to start a run twice and reports unknown runs', async () => {
    f = await FederationFixture.create();
    const run = await f.runs.create(testRunBody({ minSites: 1 }));
    await f.runs.start(run.id);
    await expect(f.runs.start(run.id)).rejects.toThrow(
      `run ${run.id} is running; only a created run can be started`,
    );
    await expect(f.runs.get('run-nope')).rejects.toThrow('run run-nope does not exist');
  });

  it('validates run configs with exact messages', async () => {
    f = await FederationFixture.create();
    try {
      await f.runs.create({ ...testRunBody(), rounds: 0, strategy: 'krum', extra: 1 });
      expect.unreachable();
    } catch (e) {
      expect(isFedsslErrorLike(e) && e.code).toBe('RUN_CONFIG_INVALID');
      expect((e as Error).message).toBe(
        'rounds: Too small: expected number to be >=1; strategy: expected one of fedavg, fedavgm, fedadam, median, trimmed-mean or an object with such a name; (root): Unrecognized key: "extra"',
      );
    }
  });
});
