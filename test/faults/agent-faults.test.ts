import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  startAgent,
  waitForRun,
  type AgentHandle,
  type CoordinatorHandle,
  type LogLine,
  type ManagedProcess,
  type RunView,
} from '@fedssl/demo';
import {
  editAgentConfig,
  exited,
  expectEverySiteAccepted,
  linesAfter,
  roundHashes,
  startFaultConsortium,
  stopFaultConsortium,
  whenRoundTrains,
} from '../support/fault-scenario';
import { twoRoundRun } from '../support/scenario';
import { startWireProxy, type ClientFrame, type WireProxy } from '../support/wire-proxy';

/**
 * The sites and the network fail, the federation does not lose what it accepted. One
 * coordinator and two agents (real processes), each agent talking through its own TCP proxy
 * (the network that stalls or drops), uploading in 8 KiB chunks so an update is many chunks.
 * The same two-round run is done uninterrupted (the baseline) and once per fault; training is
 * seeded by (base model hash, site, round), so each faulted run must publish models
 * bit-identical to the baseline's (a round retried after a failed quorum included: it keeps
 * the update already accepted and asks only the missing site again). The slow site is the exception by nature — its round closes
 * without it — so that run is compared with an uninterrupted run of the sites that took part.
 *
 * Faults land at exact points of an upload: the proxy sees every frame the agent sends (each
 * update chunk is one binary frame) and holds or cuts the link right after the n-th.
 */
describe('agent and network faults: nothing accepted is lost, the models equal the uninterrupted run', () => {
  let root: string | undefined;
  let coordinator: CoordinatorHandle;
  let agents: AgentHandle[] = [];
  const proxies: WireProxy[] = [];
  const processes: ManagedProcess[] = [];
  let baseline: RunView;
  /** Per agent: called with each binary (update chunk) frame it sends, when set. */
  const onChunk: (((proxy: WireProxy) => void) | null)[] = [null, null];
  /** Per agent: called with each frame it sends, when set. */
  const onFrame: (((frame: ClientFrame, proxy: WireProxy) => void) | null)[] = [null, null];
  /** Per agent: stall its link as it begins an upload. */
  const stallAtUpload = [false, false];
  const isBegin = (frame: ClientFrame) =>
    frame.opcode === 1 && frame.payload.toString('utf8').includes('"update:begin"');

  const create = (name: string, extra: Record<string, unknown> = {}) =>
    coordinator.api.createRun({ ...twoRoundRun(name), ...extra });
  const whenTraining = (runId: string, round: number) => whenRoundTrains(coordinator, runId, round);
  const ledger = async (agent: AgentHandle) =>
    (await readFile(path.join(agent.home, 'ledger.jsonl'), 'utf8'))
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const outboxFiles = async (agent: AgentHandle) =>
    readdir(path.join(agent.home, 'state', 'outbox')).catch(() => [] as string[]);

  beforeAll(async () => {
    ({ coordinator, agents, baseline } = await startFaultConsortium({
      prefix: 'fedssl-faults-agent-',
      processes,
      run: twoRoundRun,
      onRoot: (r) => (root = r),
      // Each agent talks through its own proxy, in 8 KiB chunks.
      beforeAgentsStart: async (enrolled, c) => {
        const upstream = { host: '127.0.0.1', port: Number(new URL(c.url).port) };
        for (const [i, agent] of enrolled.entries()) {
          const proxy = await startWireProxy(upstream, {
            holdBefore: (frame) => stallAtUpload[i]! && isBegin(frame),
            onClientFrame: (frame, p) => {
              onFrame[i]?.(frame, p);
              if (frame.opcode === 2) onChunk[i]?.(p);
            },
          });
          proxies.push(proxy);
          await editAgentConfig(agent, { coordinatorUrl: proxy.url, uploadChunkSize: 8192 });
        }
      },
    }));
  }, 240_000);

  afterAll(() =>
    stopFaultConsortium(root, processes, {
      beforeStop: () => proxies.forEach((p) => p.release()),
      afterStop: async () => void (await Promise.all(proxies.map((p) => p.close()))),
    }),
  );

  it('publishes distinct models in both rounds of the uninterrupted baseline', () => {
    expectEverySiteAccepted(baseline, agents, 2);
    expect(new Set(roundHashes(baseline)).size).toBe(2);
  });

  it('(c) agent SIGKILLed mid-upload: the restarted agent resumes its sealed update from the last acknowledged chunk', async () => {
    const alpha = agents[0]!;
    const run = await create('agent-killed');
    const training = whenTraining(run.id, 1);
    await coordinator.api.startRun(run.id);
    await training;
    const coordSince = coordinator.process.lines.length;
    // Let exactly three chunks through, then stall the link and kill the agent.
    let sent = 0;
    let third!: () => void;
    const atThird = new Promise<void>((r) => (third = r));
    onChunk[0] = (proxy) => {
      if (++sent === 3) {
        proxy.hold();
        third();
      }
    };
    await atThird;
    const dead = alpha.process!;
    dead.child.kill('SIGKILL');
    await exited(dead);
    onChunk[0] = null;
    proxies[0]!.cut();
    proxies[0]!.release();
    const fresh = await startAgent(alpha);
    processes.push(fresh);
    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });

    // The coordinator: the upload begun once, then resumed at chunk 3 — the same upload.
    const begun = linesAfter(coordinator.process, coordSince, 'upload begun', { siteId: alpha.siteId });
    const again = linesAfter(coordinator.process, coordSince, 'upload resumed', { siteId: alpha.siteId });
    expect(again.map((l) => [l.uploadId, l.nextIndex])).toEqual([[begun[0]!.uploadId, 3]]);
    expect(begun[0]!.nextIndex).toBe(0);
    expect(begun.filter((l) => l.taskId === begun[0]!.taskId)).toHaveLength(1);
    expect(Number(begun[0]!.chunks)).toBeGreaterThan(3);
    // The restarted agent took the update from its outbox: no download, no training.
    const resumed = fresh.lines.find(
      (l) => l.msg === 'update accepted' && l.runId === run.id && l.round === 1,
    );
    expect(resumed).toMatchObject({ fromOutbox: true, resumedFrom: 3 });
    expect(
      fresh.lines.some((l) => l.msg === 'resuming a sealed update from the outbox' && l.runId === run.id),
    ).toBe(true);
    const downloads = (l: LogLine) =>
      l.msg === 'global model downloaded and verified' && l.runId === run.id && l.round === 1;
    expect(fresh.lines.filter(downloads)).toEqual([]);
    expect(dead.lines.filter(downloads)).toHaveLength(1);
    // The ledger: one download and one upload for the task, the upload marked resumed.
    const entries = (await ledger(alpha)).filter((e) => e.runId === run.id && e.round === 1);
    expect(entries.map((e) => [e.kind, e.accepted, e.resumedFromChunk])).toEqual([
      ['download', undefined, undefined],
      ['upload', true, 3],
    ]);
    // Once its last task has ended (the answer to its commit may trail the run), nothing waits.
    await fresh.waitForLine(
      (l) => l.msg === 'task ended' && l.runId === run.id && l.round === 2,
      "alpha's round-2 task to end",
    );
    expect(await outboxFiles(alpha)).toEqual([]);
    expectEverySiteAccepted(done, agents, 2);
    expect(roundHashes(done)).toEqual(roundHashes(baseline));
  }, 180_000);

  it('(d) connection dropped mid-upload and restored: the agent reconnects and sends only the missing chunks', async () => {
    const alpha = agents[0]!;
    const proc = alpha.process!;
    const run = await create('link-cut');
    const training = whenTraining(run.id, 2);
    await coordinator.api.startRun(run.id);
    await training;
    const since = proc.lines.length;
    const coordSince = coordinator.process.lines.length;
    let sent = 0;
    onChunk[0] = (proxy) => {
      if (++sent === 2) {
        onChunk[0] = null;
        proxy.cut();
      }
    };
    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });
    onChunk[0] = null;
    await proc.waitForLine(
      (l) => l.msg === 'update accepted' && l.runId === run.id && l.round === 2,
      "alpha's round-2 line",
    );

    expect(sent).toBe(2);
    const resumed = linesAfter(proc, since, 'resuming upload', { runId: run.id, round: 2 });
    expect(resumed).toHaveLength(1);
    expect(Number(resumed[0]!.resumeAt)).toBeGreaterThanOrEqual(2);
    expect(linesAfter(proc, since, 'authenticated').length).toBeGreaterThanOrEqual(1);
    // Trained once: the model was downloaded once for the round and one update accepted.
    expect(
      linesAfter(proc, since, 'global model downloaded and verified', { runId: run.id, round: 2 }),
    ).toHaveLength(1);
    expect(linesAfter(proc, since, 'update accepted', { runId: run.id, round: 2 })).toHaveLength(1);
    expect(linesAfter(coordinator.process, coordSince, 'update refused')).toEqual([]);
    expectEverySiteAccepted(done, agents, 2);
    expect(roundHashes(done)).toEqual(roundHashes(baseline));
  }, 180_000);

  it('(e) a slow site past the deadline: the round closes with the others, its late upload is refused, nothing else changes', async () => {
    const [alpha, beta] = [agents[0]!, agents[1]!];
    // The reference: the same one-round run with alpha alone (beta not running).
    await beta.process!.stop();
    const ref = await create('alpha-only', { rounds: 1, minSites: 1 });
    await coordinator.api.startRun(ref.id);
    const alone = await waitForRun(coordinator.api, ref.id, { timeoutMs: 120_000 });
    processes.push(await startAgent(beta));

    // Beta's link stalls the moment it begins its upload (heartbeats still pass, so the link is
    // slow, not dead); the round's deadline passes while its update waits in the link.
    const run = await create('slow-site', { rounds: 1, minSites: 1, roundDeadlineSeconds: 30 });
    let beganUpload!: () => void;
    const stalled = new Promise<void>((r) => (beganUpload = r));
    onFrame[1] = (frame) => {
      if (isBegin(frame)) beganUpload();
    };
    stallAtUpload[1] = true;
    await coordinator.api.startRun(run.id);
    await stalled;
    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });
    const coordSince = coordinator.process.lines.length;
    stallAtUpload[1] = false;
    onFrame[1] = null;
    proxies[1]!.release();
    const refused = await coordinator.process.waitForLine(
      (l) =>
        l.msg === 'update refused' &&
        l.siteId === beta.siteId &&
        coordinator.process.lines.indexOf(l) >= coordSince,
      "beta's late upload to be refused",
      60_000,
    );
    await beta.process!.waitForLine(
      (l) => l.msg === 'task ended' && l.runId === run.id,
      'beta to give the task up',
      60_000,
    );
    const after = await coordinator.api.getRun(run.id);

    expect(refused.code).toBe('TASK_EXPIRED');
    expect(done.state).toBe('completed');
    const states = Object.fromEntries(
      done.rounds[0]!.participants.map((p) => [p.siteId, [p.state, p.reason]]),
    );
    expect(states).toEqual({
      [alpha.siteId]: ['accepted', null],
      [beta.siteId]: ['dropped', 'round deadline passed'],
    });
    // The model is what alpha alone gives; the late upload changed nothing afterwards.
    expect(alone.rounds.map((r) => [r.state, r.participants.map((p) => [p.siteId, p.state])])).toEqual([
      ['published', [[alpha.siteId, 'accepted']]],
    ]);
    expect(roundHashes(done)).toEqual(roundHashes(alone));
    expect(roundHashes(done)[0]).not.toBe(roundHashes(baseline)[0]);
    expect(after).toEqual(done);
    expect(await outboxFiles(beta)).toEqual([]);
  }, 240_000);

  it('(f) a round retried after its quorum failed keeps the accepted update: its site is not asked again, the model equals the baseline', async () => {
    const [alpha, beta] = [agents[0]!, agents[1]!];
    // Beta dies once it has the round-1 model, before it trains (so it keeps no local state of
    // the run): the deadline passes with alpha's update alone (1 of 2), attempt 1 fails, and
    // attempt 2 carries alpha's update over while it waits for beta to come back.
    // The baseline's config (the EMA schedule spans every round's steps) with a shorter deadline.
    const run = await create('quorum-retry', { roundDeadlineSeconds: 45 });
    const dead = beta.process!;
    const downloaded = dead.waitForLine(
      (l) => l.msg === 'global model downloaded and verified' && l.runId === run.id,
      'beta to download the round-1 model',
      120_000,
    );
    const carried = coordinator.process.waitForLine(
      (l) => l.msg === 'accepted updates carried over' && l.runId === run.id,
      'attempt 2 to carry the accepted update',
      120_000,
    );
    const alphaSince = alpha.process!.lines.length;
    await coordinator.api.startRun(run.id);
    await downloaded;
    dead.child.kill('SIGKILL');
    await exited(dead);
    // Nothing sealed (the outbox is written before the local state): beta will train afresh.
    expect(await outboxFiles(beta)).toEqual([]);
    const carriedLine = await carried;
    processes.push(await startAgent(beta));
    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });

    expect(carriedLine).toMatchObject({ round: 1, attempt: 2, carried: 1, sites: [alpha.siteId] });
    expect(done.state).toBe('completed');
    // The API's round view also carries the failure reason (the demo's RoundView type omits it).
    const reasonOf = (r: RunView['rounds'][number]) => (r as typeof r & { reason: string | null }).reason;
    expect(done.rounds.map((r) => [r.round, r.attempt, r.state, reasonOf(r)])).toEqual([
      [1, 1, 'failed', 'deadline passed with 1 accepted update(s); need 2'],
      [1, 2, 'published', null],
      [2, 1, 'published', null],
    ]);
    const states = Object.fromEntries(
      done.rounds[1]!.participants.map((p) => [p.siteId, [p.state, p.reason, p.exampleCount]]),
    );
    expect(states).toEqual({
      [alpha.siteId]: ['accepted', 'carried over from attempt 1', 18],
      [beta.siteId]: ['accepted', null, 18],
    });
    // Alpha trained and uploaded once for round 1: one download, one accepted update.
    const ofRun = (msg: string) => linesAfter(alpha.process!, alphaSince, msg, { runId: run.id, round: 1 });
    expect(ofRun('global model downloaded and verified')).toHaveLength(1);
    expect(ofRun('update accepted')).toHaveLength(1);
    // Training is seeded by (base model hash, site, round): beta's retrained update is the one it
    // would have sent, so the models are bit-identical to the baseline's.
    expect(roundHashes(done).filter((h) => h !== null)).toEqual(roundHashes(baseline));
  }, 240_000);
});
