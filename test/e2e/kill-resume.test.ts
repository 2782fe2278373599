import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromBase64, sha256Hex, verifySignedModelManifest } from '@fedssl/shared/crypto';
import type { CoordinatorKeys, SignedModelManifest } from '@fedssl/shared/protocol';
import {
  enrollAgent,
  generateSyntheticScans,
  startAgent,
  startCoordinator,
  waitForRun,
  type AgentHandle,
  type CoordinatorHandle,
  type LogLine,
  type ManagedProcess,
  type RunParticipant,
  type RunView,
} from '@fedssl/demo';
import { threeRoundRun } from '../support/scenario';

/**
 * Durable round engine, end to end with real processes: the same three-round run is done
 * twice on the same two agents and data — once uninterrupted (run A), once with the
 * coordinator SIGKILLed while round 2 is collecting updates and started again on the same
 * data dir and port (run B). The resumed run must keep the update it had accepted, complete,
 * and publish bit-identical models.
 *
 * To land the kill "during collection" without racing the clock, site beta is frozen
 * (SIGSTOP) the moment the coordinator logs round 2 of run B as training — that line is
 * written before any task of the round is sent — so beta cannot upload; the kill follows the
 * coordinator's `update accepted` line for alpha's round-2 update. Beta is thawed (SIGCONT)
 * once the new coordinator is up; it reconnects by itself and gets its task again.
 */
describe('coordinator killed mid-round, restarted, resumes the run', () => {
  let root: string;
  let dataDir: string;
  let coordinator: CoordinatorHandle;
  let oldCoordinator: CoordinatorHandle;
  const agents: AgentHandle[] = [];
  const processes: ManagedProcess[] = [];
  let runA: RunView;
  let runB: RunView;
  let atKill: RunView;
  let killExit: { code: number | null; signal: NodeJS.Signals | null };
  let resumeLine: LogLine;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-resume-'));
    dataDir = path.join(root, 'coordinator');
    coordinator = await startCoordinator({ dataDir });
    processes.push(coordinator.process);
    for (const [i, name] of ['alpha', 'beta'].entries()) {
      const dataPath = path.join(root, 'data', name);
      await generateSyntheticScans({
        outDir: dataPath,
        patients: 6,
        imagesPerPatient: 3,
        size: 48,
        seed: 70 + i,
        modality: 'ultrasound',
      });
      agents.push(await enrollAgent({ coordinator, name, home: path.join(root, 'agents', name), dataPath }));
    }
    for (const agent of agents) processes.push(await startAgent(agent));
    const [alpha, beta] = [agents[0]!, agents[1]!];

    // Run A: uninterrupted.
    const a = await coordinator.api.createRun(threeRoundRun('uninterrupted'));
    await coordinator.api.startRun(a.id);
    runA = await waitForRun(coordinator.api, a.id, { timeoutMs: 120_000 });

    // Run B: same config; freeze beta as round 2 opens, kill the coordinator once alpha's
    // round-2 update is accepted.
    const b = await coordinator.api.createRun(threeRoundRun('killed'));
    const coord = coordinator.process;
    const round2Training = coord.waitForLine(
      (l) => l.msg === 'round training' && l.runId === b.id && l.round === 2,
      'round 2 of run B to start training',
      120_000,
    );
    await coordinator.api.startRun(b.id);
    await round2Training;
    beta.process!.child.kill('SIGSTOP');
    // Alpha's next accepted update is its round-2 one (its round-1 line is already there).
    const acceptedBefore = new Set(coord.lines.filter((l) => l.msg === 'update accepted'));
    const alphaAccepted = (l: LogLine) =>
      l.msg === 'update accepted' && l.siteId === alpha.siteId && !acceptedBefore.has(l);
    await coord.waitForLine(alphaAccepted, "alpha's round-2 update to be accepted", 60_000);
    atKill = await coordinator.api.getRun(b.id);

    oldCoordinator = coordinator;
    coord.child.kill('SIGKILL');
    killExit = await coord.onExit();

    coordinator = await startCoordinator({
      dataDir,
      adminToken: oldCoordinator.adminToken,
      env: { FEDSSL_PORT: new URL(oldCoordinator.url).port },
    });
    processes.push(coordinator.process);
    resumeLine = await coordinator.process.waitForLine(
      (l) => l.msg === 'resuming run' && l.runId === b.id,
      'the restarted coordinator to resume run B',
    );
    beta.process!.child.kill('SIGCONT');
    runB = await waitForRun(coordinator.api, b.id, { timeoutMs: 120_000 });
  }, 300_000);

  afterAll(async () => {
    agents[1]?.process?.child.kill('SIGCONT');
    await Promise.all(processes.map((p) => p.stop()));
    if (root) await rm(root, { recursive: true, force: true });
  });

  const everyoneAccepted = (run: RunView) => {
    expect(run.state).toBe('completed');
    // One attempt per round: no round had to be retried, so no accepted update was thrown away.
    expect(run.rounds.map((r) => [r.round, r.attempt, r.state])).toEqual([
      [1, 1, 'published'],
      [2, 1, 'published'],
      [3, 1, 'published'],
    ]);
    for (const round of run.rounds) {
      const bySite = new Map<string, RunParticipant>(round.participants.map((p) => [p.siteId, p]));
      expect(round.participants).toHaveLength(2);
      for (const agent of agents) {
        expect(bySite.get(agent.siteId)?.state, `${agent.name} in round ${round.round}`).toBe('accepted');
        expect(bySite.get(agent.siteId)?.exampleCount).toBe(18);
      }
    }
  };

  it('completes the uninterrupted run with every site accepted in every round', () => {
    everyoneAccepted(runA);
  });

  it('killed the coordinator during round-2 collection: one update accepted, one outstanding', () => {
    expect(killExit.signal).toBe('SIGKILL');
    const round2 = atKill.rounds.find((r) => r.round === 2)!;
    expect(round2.state).toBe('training');
    const states = Object.fromEntries(round2.participants.map((p) => [p.siteId, p.state]));
    expect(states).toEqual({ [agents[0]!.siteId]: 'accepted', [agents[1]!.siteId]: 'offered' });
  });

  it('restarts on the same port and resumes the run from its persisted state', () => {
    expect(coordinator.url).toBe(oldCoordinator.url);
    expect(resumeLine.round).toBe(2);
  });

  it('completes the resumed run without losing the accepted update or re-training it', () => {
    everyoneAccepted(runB);
    // Alpha uploaded exactly once per round of run B: its round-2 update from before the kill
    // is the one the restarted coordinator folded in.
    const alphaUploads = agents[0]!.process!.lines.filter(
      (l) => l.msg === 'update accepted' && l.runId === runB.id,
    );
    expect(alphaUploads.map((l) => l.round)).toEqual([1, 2, 3]);
  });

  it('publishes, round for round, models bit-identical to the uninterrupted run', async () => {
    const hashes = (run: RunView) => run.rounds.map((r) => r.modelSha256);
    expect(hashes(runA).every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))).toBe(true);
    expect(new Set(hashes(runA)).size).toBe(3);
    expect(hashes(runB)).toEqual(hashes(runA));

    // The final published models, as the restarted coordinator serves them: signed, and the
    // weight bytes hash to the same value for both runs.
    const keys = (await (
      await fetch(`${coordinator.url}/api/v1/coordinator/keys`)
    ).json()) as CoordinatorKeys;
    const finals: string[] = [];
    for (const run of [runA, runB]) {
      const signed = await coordinator.api.request<SignedModelManifest>(
        'GET',
        `/models/${run.latestModelVersion}`,
      );
      const manifest = verifySignedModelManifest(signed, fromBase64(keys.signingPublicKey, 32));
      expect(manifest.round).toBe(3);
      const res = await fetch(`${coordinator.url}/api/v1/models/${run.latestModelVersion}/weights`, {
        headers: { authorization: `Bearer ${coordinator.adminToken}` },
      });
      const weights = new Uint8Array(await res.arrayBuffer());
      expect(sha256Hex(weights)).toBe(manifest.weightsSha256);
      finals.push(manifest.weightsSha256);
    }
    expect(finals[1]).toBe(finals[0]);
  });
});
