import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { decodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { sharedParamSpecs, shapeSize } from '@fedssl/shared/model';
import type { Task } from '@fedssl/shared/protocol';
import { pearson } from '@fedssl/shared/secagg';
import { readMaskedUpdate } from '../../coordinator/src/privacy/secagg-driver';
import { FederationFixture, testRunBody } from '../../coordinator/src/runs/federation.fixture';
import { openEnvelopeFile } from '../../coordinator/src/uploads/update-store';
import { applyStep, weightedMeanDelta } from '../../coordinator/src/strategies/fedavg';
import { SecAggParticipant } from '../../site-agent/src/privacy/secagg-participant';

const log = pino({ level: 'silent' });

function deltaFor(task: Task, k: number): NamedTensors {
  return sharedParamSpecs(task.model).map((s, t) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: Float32Array.from(
      { length: shapeSize(s.shape) },
      (_, i) => 0.01 * Math.sin(i * 0.7 + t + k) + 0.003 * k,
    ),
  }));
}

/** A fake agent that takes part in secure aggregation with the site agent's participant. */
function secureAgent(f: FederationFixture, id: string, examples: number, k: number) {
  const agent = f.agent(id, examples, 0);
  const participant = new SecAggParticipant(
    id,
    (taskId) => agent.tasks.some((t) => t.taskId === taskId),
    log,
  );
  f.transport.connect(id, { onTask: (t) => agent.onTask(t), onSecAgg: (m) => participant.handleStep(m) });
  f.presence.emit('online', id);
  return { agent, participant, k, examples };
}

async function maskedUpload(f: FederationFixture, s: ReturnType<typeof secureAgent>, task: Task) {
  await s.participant.ready(task.taskId, new AbortController().signal);
  const plaintext = s.participant.maskUpdate(task.taskId, deltaFor(task, s.k), s.examples);
  return f.upload(s.agent.siteId, s.agent.seal(task, { plaintext }));
}

function plainFedAvg(
  f: FederationFixture,
  base: string,
  task: Task,
  sites: ReturnType<typeof secureAgent>[],
) {
  const global = f.models.readWeights(base);
  const step = weightedMeanDelta({
    global,
    updates: sites.map((s) => ({
      siteId: s.agent.siteId,
      exampleCount: s.examples,
      readDelta: () => deltaFor(task, s.k),
    })),
  });
  return Float64Array.from(applyStep(global, step).flatMap((t) => Array.from(t.data)));
}

describe('secure aggregation run (round engine, in-memory transport)', () => {
  let f: FederationFixture;
  afterEach(() => f?.close());

  it('publishes FedAvg from masked uploads only, and survives a site that never uploads', async () => {
    f = await FederationFixture.create();
    const sites = [
      secureAgent(f, 'site-a', 100, 0),
      secureAgent(f, 'site-b', 300, 1),
      secureAgent(f, 'site-c', 200, 2),
    ];
    await f.engine.idle();
    const run = await f.runs.create(
      testRunBody({ rounds: 2, minSites: 2, roundDeadlineSeconds: 60, privacy: { secureAggregation: true } }),
    );
    const first = sites.map((s) => s.agent.nextTask());
    await f.runs.start(run.id);

    // Round 1: every site uploads a masked update.
    const tasks1 = await Promise.all(first);
    expect(tasks1.every((t) => t.privacy?.secureAggregation === true)).toBe(true);
    const next = sites.map((s) => s.agent.nextTask());
    for (const [i, s] of sites.entries()) await maskedUpload(f, s, tasks1[i]!);
    await f.engine.idle();
    const r1 = f.models.getManifest(`${run.id}.r1`)!.manifest;
    expect(r1.strategy).toBe('fedavg+secagg');
    expect(r1.sites.map((s) => s.siteId)).toEqual(['site-a', 'site-b', 'site-c']);
    const expected1 = plainFedAvg(f, `${run.id}.r0`, tasks1[0]!, sites);
    const got1 = f.flatWeights(`${run.id}.r1`);
    expect(Math.max(...got1.map((v, i) => Math.abs(v - expected1[i]!)))).toBeLessThan(1e-6);

    // What the coordinator stored for a site is the masked vector, not its delta.
    const stored = await f.repo.listUpdates(run.id, 1, 1);
    expect(stored).toHaveLength(3);
    const { header } = f.updates.readHeader(stored[1]!.headerPath);
    const plain = openEnvelopeFile(stored[1]!.envelopePath, header, f.keys.keys.box.secretKey);
    const y = readMaskedUpdate(plain, tasks1[1]!.model);
    const x = Float64Array.from(deltaFor(tasks1[1]!, 1).flatMap((t) => Array.from(t.data)));
    expect(Math.abs(pearson(y, x))).toBeLessThan(5 / Math.sqrt(x.length));
    expect(() => decodeWeights(plain)).toThrow();

    // Round 2: site-c has its masks set up but never uploads; the deadline closes the round.
    const tasks2 = await Promise.all(next);
    await maskedUpload(f, sites[0]!, tasks2[0]!);
    await maskedUpload(f, sites[1]!, tasks2[1]!);
    await sites[2]!.participant.ready(tasks2[2]!.taskId, new AbortController().signal);
    f.clock.advance(61_000);
    await f.engine.idle();
    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    const r2 = f.models.getManifest(`${run.id}.r2`)!.manifest;
    expect(r2.sites.map((s) => s.siteId)).toEqual(['site-a', 'site-b']);
    const expected2 = plainFedAvg(f, `${run.id}.r1`, tasks2[0]!, sites.slice(0, 2));
    const got2 = f.flatWeights(`${run.id}.r2`);
    expect(Math.max(...got2.map((v, i) => Math.abs(v - expected2[i]!)))).toBeLessThan(1e-6);
  });

  it('after a coordinator restart mid-round the session is gone: the round fails and is retried with new masks, never aggregated in the clear', async () => {
    f = await FederationFixture.create();
    const sites = [secureAgent(f, 'site-a', 100, 0), secureAgent(f, 'site-b', 300, 1)];
    await f.engine.idle();
    const run = await f.runs.create(
      testRunBody({ rounds: 1, minSites: 2, privacy: { secureAggregation: true } }),
    );
    const first = sites.map((s) => s.agent.nextTask());
    await f.runs.start(run.id);
    const tasks1 = await Promise.all(first);
    for (const [i, s] of sites.entries())
      await s.participant.ready(tasks1[i]!.taskId, new AbortController().signal);
    await f.restart();
    await f.engine.resumeAll();
    const retry = sites.map((s) => s.agent.nextTask());
    for (const [i, s] of sites.entries()) await maskedUpload(f, s, tasks1[i]!);
    await f.engine.idle();
    const failed = (await f.runs.get(run.id)).rounds[0]!;
    expect(failed.state).toBe('failed');
    expect(failed.reason).toMatch(/SECAGG_PROTOCOL: no secure-aggregation session for this round/);
    const tasks2 = await Promise.all(retry);
    for (const [i, s] of sites.entries()) await maskedUpload(f, s, tasks2[i]!);
    await f.engine.idle();
    const detail = await f.runs.get(run.id);
    expect(detail.state).toBe('completed');
    expect(detail.rounds.map((r) => [r.attempt, r.state])).toEqual([
      [1, 'failed'],
      [2, 'published'],
    ]);
    const expected = plainFedAvg(f, `${run.id}.r0`, tasks2[0]!, sites);
    const got = f.flatWeights(`${run.id}.r1`);
    expect(Math.max(...got.map((v, i) => Math.abs(v - expected[i]!)))).toBeLessThan(1e-6);
  });
});
