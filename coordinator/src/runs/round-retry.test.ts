import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { verifySignedModelManifest } from '@fedssl/shared/crypto';
import type { Task } from '@fedssl/shared/protocol';
import {
  captureLogs,
  constantDelta,
  FederationFixture,
  testRunBody,
  type FakeAgent,
} from './federation.fixture';

/**
 * A retried round attempt keeps the updates accepted earlier in the same round when they were
 * trained from the attempt's base model (RoundEngine.carryPlan): they count toward the quorum,
 * are aggregated once, and their sites get no new task.
 */
let f: FederationFixture | undefined;
afterEach(async () => {
  await f?.close();
  f = undefined;
});

/** Expected published weights: float32 of base + the example-weighted float64 mean of constant deltas. */
function expectFedAvg(
  fx: FederationFixture,
  base: string,
  version: string,
  parts: { examples: number; delta: number }[],
): void {
  const total = parts.reduce((n, p) => n + p.examples, 0);
  const mean = parts.reduce((s, p) => s + p.examples * p.delta, 0) / total;
  const before = fx.flatWeights(base);
  const after = fx.flatWeights(version);
  expect(after.length).toBe(before.length);
  let worst = 0;
  for (let i = 0; i < after.length; i++)
    worst = Math.max(worst, Math.abs(after[i]! - Math.fround(before[i]! + mean)));
  expect(worst).toBeLessThan(1e-6);
}

/** Tasks received so far by an agent. */
const offersTo = (fx: FederationFixture, siteId: string) =>
  fx.transport.offers.filter((o) => o.siteId === siteId).length;

async function auditOf(fx: FederationFixture, action: string) {
  return (await fx.audit.list({ limit: 1000 })).filter((e) => e.action === action);
}

/** Connects the agents, starts a run and resolves each agent's first task. */
async function start(
  fx: FederationFixture,
  agents: FakeAgent[],
  body: Parameters<typeof testRunBody>[0],
): Promise<{ runId: string; tasks: Task[] }> {
  const offered = agents.map((a) => a.nextTask());
  for (const a of agents) fx.connect(a);
  await fx.engine.idle();
  const run = await fx.runs.create(testRunBody(body));
  await fx.runs.start(run.id);
  return { runId: run.id, tasks: await Promise.all(offered) };
}

/**
 * Two sites (100 examples each, deltas 0.2 and 0.4) tasked in a one-round run whose model store
 * refuses to publish ("model store unavailable") until an attempt has failed, so its first
 * aggregation fails (or fails earlier, when it reads an update the test damaged).
 */
async function aggregationFailsOnce(fx: FederationFixture) {
  const a = fx.agent('site-a', 100, 0.2);
  const b = fx.agent('site-b', 100, 0.4);
  const started = await start(fx, [a, b], { rounds: 1, minSites: 2 });
  const publish = fx.models.publish.bind(fx.models);
  let broken = true;
  fx.engine.events.on('round', (e) => {
    if (e.state === 'failed') broken = false;
  });
  fx.models.publish = (args) => {
    if (broken) throw new Error('model store unavailable');
    return publish(args);
  };
  return { a, b, ...started };
}

describe('RoundEngine: a retried attempt keeps the accepted updates of its round', () => {
  it('after a quorum failure: the accepted update counts, its site is not re-tasked, the aggregate is the weighted mean of carried + new', async () => {
    const log = captureLogs();
    f = await FederationFixture.create(log.logger);
    const a = f.agent('site-a', 100, 0.01);
    const b = f.agent('site-b', 300, -0.02);
    const c = f.agent('site-c', 50, 0.04);
    const { runId, tasks } = await start(f, [a, b, c], { rounds: 1, minSites: 3, roundDeadlineSeconds: 60 });
    const first = await f.upload('site-a', a.seal(tasks[0]!));
    const retryB = b.nextTask();
    const retryC = c.nextTask();
    f.clock.advance(60_001);
    await f.engine.idle();

    const failed = await f.repo.getRound(runId, 1, 1);
    expect(failed).toMatchObject({
      state: 'failed',
      reason: 'deadline passed with 1 accepted update(s); need 3',
    });
    expect((await f.repo.listCarriedUpdates(runId, 1, 2)).map((u) => [u.siteId, u.id, u.attempt])).toEqual([
      ['site-a', first.updateId, 1],
    ]);
    const [tb, tc] = await Promise.all([retryB, retryC]);
    expect([tb.round, tc.round]).toEqual([1, 1]);
    // site-a did its work for round 1: no second task, not even when it reconnects.
    f.transport.disconnect('site-a');
    f.connect(a);
    await f.engine.idle();
    expect(offersTo(f, 'site-a')).toBe(1);
    expect(a.tasks).toHaveLength(1);

    await f.upload('site-b', b.seal(tb));
    expect((await f.repo.getRound(runId, 1, 2))!.state).toBe('training'); // 2 of 3
    await f.upload('site-c', c.seal(tc));
    await f.engine.idle();

    const detail = await f.runs.get(runId);
    expect(detail.state).toBe('completed');
    expect(detail.rounds.map((r) => [r.attempt, r.state])).toEqual([
      [1, 'failed'],
      [2, 'published'],
    ]);
    expect(detail.rounds[1]!.participants.map((p) => [p.siteId, p.state, p.exampleCount, p.reason])).toEqual([
      ['site-a', 'accepted', 100, 'carried over from attempt 1'],
      ['site-b', 'accepted', 300, null],
      ['site-c', 'accepted', 50, null],
    ]);
    const m = verifySignedModelManifest(f.models.getManifest(`${runId}.r1`)!, f.keys.keys.signing.publicKey);
    expect(m.sites).toEqual([
      { siteId: 'site-a', exampleCount: 100 },
      { siteId: 'site-b', exampleCount: 300 },
      { siteId: 'site-c', exampleCount: 50 },
    ]);
    expectFedAvg(f, `${runId}.r0`, `${runId}.r1`, [
      { examples: 100, delta: 0.01 },
      { examples: 300, delta: -0.02 },
      { examples: 50, delta: 0.04 },
    ]);
    expect((await auditOf(f, 'round.updates-carried')).map((e) => e.details)).toEqual([
      {
        round: 1,
        attempt: 2,
        updates: [{ siteId: 'site-a', updateId: first.updateId, acceptedInAttempt: 1 }],
      },
    ]);
    expect(await auditOf(f, 'round.updates-not-carried')).toEqual([]);
    expect(log.lines.filter((l) => l.msg === 'accepted updates carried over').map((l) => l.sites)).toEqual([
      ['site-a'],
    ]);
  });

  it('counts an update once: carried through two failed attempts, and its envelope sent again', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.1);
    const b = f.agent('site-b', 30, 0.5);
    const { runId, tasks } = await start(f, [a, b], { rounds: 1, minSites: 2, roundDeadlineSeconds: 60 });
    const sealed = a.seal(tasks[0]!);
    const first = await f.upload('site-a', sealed);
    // site-b lets two deadlines pass: attempts 1 and 2 fail, site-a's update is carried each time.
    f.clock.advance(60_001);
    await f.engine.idle();
    f.clock.advance(60_001);
    await f.engine.idle();
    const rounds = await f.repo.listRounds(runId);
    expect(rounds.map((r) => [r.attempt, r.state, r.reason])).toEqual([
      [1, 'failed', 'deadline passed with 1 accepted update(s); need 2'],
      [
        2,
        'failed',
        'deadline passed with 1 accepted update(s) (1 carried over from an earlier attempt); need 2',
      ],
      [3, 'training', null],
    ]);
    for (const attempt of [2, 3])
      expect((await f.repo.listTasks(runId, 1, attempt)).map((t) => t.siteId)).toEqual(['site-b']);
    expect((await f.repo.listRoundUpdates(runId, 1, 3)).map((u) => u.id)).toEqual([first.updateId]);

    // The very envelope resent (its commit answer lost): accepted again, nothing stored twice.
    const resent = await f.uploads.begin('site-a', { header: sealed.header, signature: sealed.signature });
    expect(resent.nextIndex).toBe(sealed.chunks.length);
    await expect(f.uploads.commit('site-a', { uploadId: resent.uploadId })).resolves.toEqual({
      accepted: true,
      updateId: first.updateId,
    });
    expect(await f.repo.countUpdates()).toBe(1);

    await f.upload('site-b', b.seal(b.tasks.at(-1)!));
    await f.engine.idle();
    expect(offersTo(f, 'site-a')).toBe(1);
    const m = verifySignedModelManifest(f.models.getManifest(`${runId}.r1`)!, f.keys.keys.signing.publicKey);
    expect(m.sites).toEqual([
      { siteId: 'site-a', exampleCount: 10 },
      { siteId: 'site-b', exampleCount: 30 },
    ]);
    // Counted twice, site-a would weigh 20 of 50 and the mean would be 0.34, not 0.4.
    expectFedAvg(f, `${runId}.r0`, `${runId}.r1`, [
      { examples: 10, delta: 0.1 },
      { examples: 30, delta: 0.5 },
    ]);
    expect((await auditOf(f, 'round.updates-carried')).map((e) => e.details['attempt'])).toEqual([2, 3]);
  });

  it('aggregates carried updates alone when they make the quorum (the attempt before failed in aggregation)', async () => {
    f = await FederationFixture.create();
    const { a, b, runId, tasks } = await aggregationFailsOnce(f);
    await f.upload('site-a', a.seal(tasks[0]!));
    await f.upload('site-b', b.seal(tasks[1]!));
    await f.engine.idle();

    const detail = await f.runs.get(runId);
    expect(detail.rounds.map((r) => [r.attempt, r.state, r.reason])).toEqual([
      [1, 'failed', 'aggregation failed: Error: model store unavailable'],
      [2, 'published', null],
    ]);
    expect(detail.state).toBe('completed');
    expect(await f.repo.listTasks(runId, 1, 2)).toEqual([]);
    expect(f.transport.offers).toHaveLength(2);
    expectFedAvg(f, `${runId}.r0`, `${runId}.r1`, [
      { examples: 100, delta: 0.2 },
      { examples: 100, delta: 0.4 },
    ]);
  });

  it('after a failed aggregation, re-opens each update before carrying it: one damaged on disk is left out, its site trains again', async () => {
    f = await FederationFixture.create();
    const { a, b, runId, tasks } = await aggregationFailsOnce(f);
    const accA = await f.upload('site-a', a.seal(tasks[0]!));
    // site-a's accepted envelope is damaged on disk (one ciphertext byte) before aggregation.
    const envA = (await f.repo.getUpdateByTask(tasks[0]!.taskId))!.envelopePath;
    const bytes = readFileSync(envA);
    bytes[40]! ^= 0x01;
    writeFileSync(envA, bytes);
    const retryA = a.nextTask();
    await f.upload('site-b', b.seal(tasks[1]!));
    await f.engine.idle();

    expect((await f.repo.listCarriedUpdates(runId, 1, 2)).map((u) => u.siteId)).toEqual(['site-b']);
    const [notCarried] = await auditOf(f, 'round.updates-not-carried');
    expect(notCarried!.details).toMatchObject({
      round: 1,
      attempt: 2,
      updates: [{ siteId: 'site-a', updateId: accA.updateId, acceptedInAttempt: 1 }],
    });
    expect(notCarried!.details['reason']).toMatch(/^update no longer opens: ENVELOPE_/);
    const ta = await retryA;
    await f.upload('site-a', a.seal(ta));
    await f.engine.idle();
    expect((await f.runs.get(runId)).rounds.map((r) => [r.attempt, r.state])).toEqual([
      [1, 'failed'],
      [2, 'published'],
    ]);
    expectFedAvg(f, `${runId}.r0`, `${runId}.r1`, [
      { examples: 100, delta: 0.2 },
      { examples: 100, delta: 0.4 },
    ]);
  });

  it('does not use an update trained from another base model: audited with the reason, its site trains again', async () => {
    const log = captureLogs();
    f = await FederationFixture.create(log.logger);
    const a = f.agent('site-a', 10, 0.1);
    const b = f.agent('site-b', 30, 0.5);
    const { runId, tasks } = await start(f, [a, b], { rounds: 1, minSites: 2, roundDeadlineSeconds: 60 });
    const first = await f.upload('site-a', a.seal(tasks[0]!));
    // Paused, the failed round waits for resume; meanwhile the run's base model changes (as an
    // operator's roll-back to another version would do).
    await f.runs.pause(runId);
    f.clock.advance(60_001);
    await f.engine.idle();
    expect(await f.repo.latestRound(runId)).toMatchObject({ attempt: 1, state: 'failed' });
    const run = (await f.repo.getRun(runId))!;
    const other = f.models.publish({
      version: `${runId}.other`,
      runId,
      round: 0,
      model: run.config.model,
      weights: constantDelta(run.config.model, 0.25),
      parentVersion: null,
      parentSha256: null,
      sites: [],
      strategy: 'fedavg',
    });
    await f.repo.updateRun(
      runId,
      { latestModelVersion: `${runId}.other` },
      new Date(f.clock.now()).toISOString(),
    );
    const retryA = a.nextTask();
    const retryB = b.nextTask();
    await f.runs.resume(runId);
    const [ta, tb] = await Promise.all([retryA, retryB]);

    expect(ta.modelHash).toBe(other.manifest.weightsSha256);
    expect(await f.repo.listCarriedUpdates(runId, 1, 2)).toEqual([]);
    const trainedFrom = tasks[0]!.modelHash;
    const reason = `base model changed: trained from ${trainedFrom}, the round now starts from ${other.manifest.weightsSha256}`;
    expect((await auditOf(f, 'round.updates-not-carried')).map((e) => e.details)).toEqual([
      {
        round: 1,
        attempt: 2,
        reason,
        updates: [{ siteId: 'site-a', updateId: first.updateId, acceptedInAttempt: 1 }],
      },
    ]);
    expect(
      log.lines.filter((l) => l.msg === 'accepted updates not carried over').map((l) => l.reason),
    ).toEqual([reason]);
    await f.upload('site-a', a.seal(ta));
    await f.upload('site-b', b.seal(tb));
    await f.engine.idle();
    expect((await f.runs.get(runId)).state).toBe('completed');
    expectFedAvg(f, `${runId}.other`, `${runId}.r1`, [
      { examples: 10, delta: 0.1 },
      { examples: 30, delta: 0.5 },
    ]);
  });

  it('carries nothing when the run opts out, nor an update whose files are gone', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.1);
    const b = f.agent('site-b', 10, 0.1);
    const c = f.agent('site-c', 10, 0.1);
    const optOut = await start(f, [a, b, c], {
      rounds: 1,
      minSites: 3,
      roundDeadlineSeconds: 60,
      reuseAcceptedUpdates: false,
    });
    await f.upload('site-a', a.seal(optOut.tasks[0]!));
    const retryA = a.nextTask();
    f.clock.advance(60_001);
    await f.engine.idle();
    expect((await retryA).round).toBe(1);
    expect((await auditOf(f, 'round.updates-not-carried')).map((e) => e.details['reason'])).toEqual([
      'the run sets reuseAcceptedUpdates: false',
    ]);
    await f.runs.cancel(optOut.runId);

    // Another run: site-a's accepted envelope is deleted before the retry.
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 3, roundDeadlineSeconds: 60 }));
    const next = [a.nextTask(), b.nextTask(), c.nextTask()];
    await f.runs.start(run.id);
    const [t2a, t2b] = await Promise.all(next);
    const accA = await f.upload('site-a', a.seal(t2a!));
    await f.upload('site-b', b.seal(t2b!));
    rmSync((await f.repo.listUpdates(run.id, 1, 1)).find((u) => u.id === accA.updateId)!.envelopePath);
    const again = a.nextTask();
    const tc = c.nextTask();
    f.clock.advance(60_001);
    await f.engine.idle();
    expect((await f.repo.listCarriedUpdates(run.id, 1, 2)).map((u) => u.siteId)).toEqual(['site-b']);
    expect(
      (await auditOf(f, 'round.updates-not-carried'))
        .filter((e) => e.target === run.id)
        .map((e) => [
          e.details['reason'],
          (e.details['updates'] as { siteId: string }[]).map((u) => u.siteId),
        ]),
    ).toEqual([['update files missing on disk', ['site-a']]]);
    expect((await again).round).toBe(1);
    expect((await tc).round).toBe(1);
  });

  it('keeps what was carried across a coordinator restart', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.1);
    const b = f.agent('site-b', 30, 0.5);
    const { runId, tasks } = await start(f, [a, b], { rounds: 1, minSites: 2, roundDeadlineSeconds: 60 });
    await f.upload('site-a', a.seal(tasks[0]!));
    const retryB = b.nextTask();
    f.clock.advance(60_001);
    await f.engine.idle();
    const tb = await retryB;

    await f.restart();
    await f.engine.resumeAll();
    await f.engine.idle();
    expect((await f.repo.listCarriedUpdates(runId, 1, 2)).map((u) => u.siteId)).toEqual(['site-a']);
    await f.upload('site-b', b.seal(tb));
    await f.engine.idle();
    expect((await f.runs.get(runId)).state).toBe('completed');
    expect(offersTo(f, 'site-a')).toBe(1);
    expectFedAvg(f, `${runId}.r0`, `${runId}.r1`, [
      { examples: 10, delta: 0.1 },
      { examples: 30, delta: 0.5 },
    ]);
  });
});
