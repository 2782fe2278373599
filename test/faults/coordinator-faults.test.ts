import { existsSync } from 'node:fs';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromBase64, sha256Hex, verifySignedModelManifest } from '@fedssl/shared/crypto';
import type { CoordinatorKeys, SignedModelManifest } from '@fedssl/shared/protocol';
import {
  startCoordinator,
  waitForRun,
  type AgentHandle,
  type CoordinatorHandle,
  type LogLine,
  type ManagedProcess,
  type RunView,
} from '@fedssl/demo';
import {
  armFault,
  exited,
  expectEverySiteAccepted,
  linesAfter,
  roundHashes,
  startFaultConsortium,
  stopFaultConsortium,
  tryMountTmpfs,
  unmount,
  whenRoundTrains,
} from '../support/fault-scenario';
import { threeRoundRun } from '../support/scenario';

/**
 * The coordinator fails, the federation does not lose what it accepted. One coordinator and
 * two agents (real processes) do the same three-round run several times: once uninterrupted
 * (the baseline), then once per fault. Training is seeded by (base model hash, site, round),
 * so every run of this config on this data publishes the same models — each faulted run must
 * publish, round for round, models bit-identical to the baseline's, with one attempt per
 * round (a retried round would mean accepted updates were thrown away).
 *
 * Faults are placed without racing the clock: by freezing an agent (SIGSTOP) and waiting for
 * log lines, or through the coordinator's fault hook (FEDSSL_FAULT_FILE, armed per run and
 * round, fires once). The data dir is a 64 MB tmpfs when this process may mount one (root),
 * so "disk full" is the kernel's own ENOSPC; elsewhere the hook injects ENOSPC at the write.
 */
describe('coordinator faults: nothing accepted is lost, the models equal the uninterrupted run', () => {
  let root: string | undefined;
  let dataDir: string;
  let faultFile: string;
  let tmpfs = false;
  let coordinator: CoordinatorHandle;
  let agents: AgentHandle[] = [];
  const processes: ManagedProcess[] = [];
  let baseline: RunView;
  const faulted: RunView[] = [];

  const env = () => ({ FEDSSL_FAULT_FILE: faultFile });
  /** Starts a coordinator on the same data dir, port and admin token (the old one must be gone). */
  const restart = async (): Promise<CoordinatorHandle> => {
    const old = coordinator;
    if (old.process.running) {
      old.process.child.kill('SIGKILL');
      await old.process.onExit();
    }
    coordinator = await startCoordinator({
      dataDir,
      adminToken: old.adminToken,
      env: { ...env(), FEDSSL_PORT: new URL(old.url).port },
    });
    processes.push(coordinator.process);
    return coordinator;
  };
  const create = (name: string) => coordinator.api.createRun(threeRoundRun(name));
  const waitFor = (proc: ManagedProcess, what: string, match: (l: LogLine) => boolean) =>
    proc.waitForLine(match, what, 120_000);
  /** Starts a run and returns once `round` trains (logged before any of its tasks is sent). */
  const startUntilTraining = async (runId: string, round: number) => {
    const training = whenRoundTrains(coordinator, runId, round);
    await coordinator.api.startRun(runId);
    await training;
  };

  beforeAll(async () => {
    ({ coordinator, agents, baseline } = await startFaultConsortium({
      prefix: 'fedssl-faults-coord-',
      processes,
      run: threeRoundRun,
      onRoot: (r) => (root = r),
      // Its data dir on a small tmpfs where possible, its fault hook armed through a file.
      coordinator: async (r) => {
        dataDir = path.join(r, 'coordinator');
        faultFile = path.join(r, 'fault.json');
        await mkdir(dataDir, { recursive: true });
        tmpfs = tryMountTmpfs(dataDir, 64);
        return startCoordinator({ dataDir, env: env() });
      },
    }));
  }, 240_000);

  afterAll(() =>
    stopFaultConsortium(root, processes, {
      // A frozen agent would not stop.
      beforeStop: () => agents.forEach((a) => a.process?.child.kill('SIGCONT')),
      afterStop: () => void (tmpfs && unmount(dataDir)),
    }),
  );

  const expectSameModels = (run: RunView) => {
    expectEverySiteAccepted(run, agents, 3);
    expect(roundHashes(run)).toEqual(roundHashes(baseline));
    faulted.push(run);
  };

  it('publishes distinct models in every round of the uninterrupted baseline', () => {
    expectEverySiteAccepted(baseline, agents, 3);
    const hashes = roundHashes(baseline);
    expect(hashes.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))).toBe(true);
    expect(new Set(hashes).size).toBe(3);
  });

  it('(a) coordinator SIGKILLed during collection: restarts on the same port, keeps the accepted update', async () => {
    const [alpha, beta] = [agents[0]!, agents[1]!];
    const run = await create('killed-in-collection');
    const proc = coordinator.process;
    // Beta is frozen the moment round 2 trains (logged before any task is sent), so it cannot
    // upload; the kill follows alpha's round-2 acceptance.
    await startUntilTraining(run.id, 2);
    beta.process!.child.kill('SIGSTOP');
    const since = proc.lines.length;
    await waitFor(
      proc,
      "alpha's round-2 update",
      (l) => l.msg === 'update accepted' && l.siteId === alpha.siteId && proc.lines.indexOf(l) >= since,
    );
    const atKill = await coordinator.api.getRun(run.id);
    const oldUrl = coordinator.url;
    await restart();
    const resumed = await waitFor(
      coordinator.process,
      'the run to resume',
      (l) => l.msg === 'resuming run' && l.runId === run.id,
    );
    beta.process!.child.kill('SIGCONT');
    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });

    expect(coordinator.url).toBe(oldUrl);
    expect(resumed.round).toBe(2);
    const r2 = atKill.rounds.find((r) => r.round === 2)!;
    expect(r2.state).toBe('training');
    expect(Object.fromEntries(r2.participants.map((p) => [p.siteId, p.state]))).toEqual({
      [alpha.siteId]: 'accepted',
      [beta.siteId]: 'offered',
    });
    // Alpha uploaded once per round: its round-2 update from before the kill is the one folded in.
    // (Its last line may trail the run's completion: the commit is acked before it is logged.)
    await alpha.process!.waitForLine(
      (l) => l.msg === 'update accepted' && l.runId === run.id && l.round === 3,
      "alpha's round-3 line",
    );
    const alphaUploads = alpha.process!.lines.filter(
      (l) => l.msg === 'update accepted' && l.runId === run.id,
    );
    expect(alphaUploads.map((l) => l.round)).toEqual([1, 2, 3]);
    expectSameModels(done);
  }, 180_000);

  it('(b) coordinator SIGKILLed during aggregation, before and after publishing: recovers from the stored updates', async () => {
    const run = await create('killed-in-aggregation');
    const modelDir = (round: number) => path.join(dataDir, 'models', `${run.id}.r${round}`);
    await armFault(faultFile, {
      point: 'aggregation.before-publish',
      action: 'crash',
      runId: run.id,
      round: 2,
    });
    const first = coordinator.process;
    await coordinator.api.startRun(run.id);
    expect((await exited(first)).signal).toBe('SIGKILL');
    expect(existsSync(`${faultFile}.fired`)).toBe(true);
    // The dead process had both round-2 updates accepted on disk and published nothing for
    // round 2. (Checked on disk: pino writes asynchronously, so a SIGKILL can swallow the
    // last log lines.)
    const updatesDir = path.join(dataDir, 'updates', run.id, '2');
    expect((await readdir(updatesDir)).sort()).toEqual(
      agents.flatMap((a) => [`${a.siteId}.env`, `${a.siteId}.header.json`]).sort(),
    );
    expect(existsSync(modelDir(2))).toBe(false);

    // Restart; arm the second crash: round 3's version written, the store not yet told.
    await restart();
    const second = coordinator.process;
    await armFault(faultFile, {
      point: 'aggregation.after-publish',
      action: 'crash',
      runId: run.id,
      round: 3,
    });
    const published2 = await waitFor(
      second,
      'round 2 to be published',
      (l) => l.msg === 'round published' && l.runId === run.id && l.round === 2,
    );
    // Aggregated from the updates on disk: no upload reached the new process before it.
    expect(
      second.lines.slice(0, second.lines.indexOf(published2)).filter((l) => l.msg === 'update accepted'),
    ).toEqual([]);
    expect(second.lines.find((l) => l.msg === 'resuming run' && l.runId === run.id)?.round).toBe(2);
    expect((await exited(second)).signal).toBe('SIGKILL');
    expect(existsSync(path.join(modelDir(3), 'manifest.json'))).toBe(true);

    await restart();
    const third = coordinator.process;
    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });
    // The restarted process found round 3 still aggregating (the store was never told) and took
    // the version on disk as it was: nothing aggregated or published a second time.
    expect(third.lines.find((l) => l.msg === 'resuming run' && l.runId === run.id)?.round).toBe(3);
    expect(linesAfter(third, 0, 'round published', { runId: run.id, round: 3 })).toHaveLength(1);
    expect(linesAfter(third, 0, 'model version published')).toEqual([]);
    expectSameModels(done);
    // Let both agents finish their round-3 tasks before the next scenario. The one whose
    // commit answer died with the coordinator retries the same envelope and is answered
    // "accepted" again (docs/operations.md).
    for (const a of agents)
      await a.process!.waitForLine(
        (l) => l.msg === 'task ended' && l.runId === run.id && l.round === 3,
        `${a.name} to end its round-3 task`,
      );
  }, 240_000);

  it('(f) data directory full during collection and aggregation: STORAGE_FULL, nothing corrupted, recovers once freed', async () => {
    const run = await create('disk-full');
    const proc = coordinator.process;
    const since = proc.lines.length;
    await startUntilTraining(run.id, 2);
    const filler = path.join(dataDir, 'filler');
    if (tmpfs) await fillDisk(filler);
    else
      await armFault(faultFile, { point: 'upload.chunk-write', action: 'enospc', runId: run.id, round: 2 });
    await waitFor(proc, 'a refused chunk', (l) => l.msg === 'data directory full');
    // An agent was told STORAGE_FULL and waits to resume (it does not fail the task).
    await Promise.race(
      agents.map((a) =>
        a.process!.waitForLine(
          (l) => l.msg === 'upload interrupted, will resume' && l.code === 'STORAGE_FULL',
          `${a.name} to be told STORAGE_FULL`,
          60_000,
        ),
      ),
    );
    // Nothing half-written is kept: part files hold whole chunks only (checked on resume) and
    // no accepted update of round 2 exists yet.
    if (tmpfs) {
      const r2 = (await coordinator.api.getRun(run.id)).rounds.find((r) => r.round === 2)!;
      expect(r2.participants.map((p) => p.state)).toEqual(['offered', 'offered']);
    }
    await armFault(faultFile, {
      point: 'aggregation.before-publish',
      action: 'enospc',
      runId: run.id,
      round: 3,
    });
    await rm(filler, { force: true });

    const done = await waitForRun(coordinator.api, run.id, { timeoutMs: 150_000 });
    expect(
      linesAfter(proc, 0, 'aggregation deferred: data directory full', { runId: run.id, round: 3 }),
    ).toHaveLength(1);
    expect(linesAfter(proc, since, 'update refused').filter((l) => l.code !== 'STORAGE_FULL')).toEqual([]);
    expectSameModels(done);
    // No upload left half-way on disk.
    expect(await readdir(path.join(dataDir, 'uploads'))).toEqual([]);
  }, 240_000);

  it('serves every final model signed and intact, and the audit chain verifies', async () => {
    expect(faulted).toHaveLength(3);
    const keys = (await (
      await fetch(`${coordinator.url}/api/v1/coordinator/keys`)
    ).json()) as CoordinatorKeys;
    for (const run of [baseline, ...faulted]) {
      const signed = await coordinator.api.request<SignedModelManifest>(
        'GET',
        `/models/${run.latestModelVersion}`,
      );
      const manifest = verifySignedModelManifest(signed, fromBase64(keys.signingPublicKey, 32));
      expect(manifest.round).toBe(3);
      const res = await fetch(`${coordinator.url}/api/v1/models/${run.latestModelVersion}/weights`, {
        headers: { authorization: `Bearer ${coordinator.adminToken}` },
      });
      expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(manifest.weightsSha256);
      expect(manifest.weightsSha256).toBe(roundHashes(baseline)[2]);
    }
    expect(await coordinator.api.request('GET', '/audit/verify')).toMatchObject({ ok: true });
  });
});

/** Writes `file` until the file system says ENOSPC. */
async function fillDisk(file: string): Promise<void> {
  const fh = await open(file, 'w');
  try {
    for (const size of [1 << 20, 1 << 12]) {
      const block = Buffer.alloc(size, 0xa5);
      for (;;) {
        try {
          await fh.write(block);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw e;
        }
      }
    }
  } finally {
    await fh.close().catch(() => undefined);
  }
}
