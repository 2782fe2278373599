import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dpEpsilon } from '@fedssl/shared/privacy';
import {
  startCoordinator,
  waitForRun,
  type AgentHandle,
  type CoordinatorHandle,
  type ManagedProcess,
} from '@fedssl/demo';
import {
  dumpLogsIfAsked,
  enrollSites,
  expectEverySiteAccepted,
  startAgents,
} from '../support/fault-scenario';
import { twoRoundRun } from '../support/scenario';

/**
 * Privacy options over real processes and sockets: a coordinator and two agents run two rounds
 * with differential privacy and secure aggregation together (docs/privacy.md). Every site's
 * update is clipped and noised on the site (its ledger says so), masked, uploaded, and only the
 * sum is unmasked; the run status reports the accountant's ε.
 */
describe('privacy run: DP + secure aggregation, real processes', () => {
  let root: string;
  let coordinator: CoordinatorHandle;
  let agents: AgentHandle[] = [];
  const processes: ManagedProcess[] = [];
  const dp = { clipNorm: 1, noiseMultiplier: 0.05, delta: 1e-5 };

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-privacy-e2e-'));
    coordinator = await startCoordinator({ dataDir: path.join(root, 'coordinator') });
    processes.push(coordinator.process);
    agents = await enrollSites(coordinator, root, ['alpha', 'beta']);
    await startAgents(agents, processes);
  }, 120_000);

  afterAll(async () => {
    await dumpLogsIfAsked(processes);
    await Promise.all(processes.map((p) => p.stop()));
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('completes, publishes fedavg+secagg models from masked updates, and reports ε', async () => {
    const created = await coordinator.api.createRun({
      ...twoRoundRun('private'),
      privacy: { dp, secureAggregation: true },
    });
    await coordinator.api.startRun(created.id);
    const run = await waitForRun(coordinator.api, created.id, { timeoutMs: 150_000 });
    expectEverySiteAccepted(run, agents, 2);

    const status = run as unknown as { privacy: { epsilon: number; releases: number; delta: number } };
    expect(status.privacy.releases).toBe(2);
    expect(status.privacy.epsilon).toBe(
      dpEpsilon({ noiseMultiplier: dp.noiseMultiplier, sampleRate: 1, steps: 2, delta: dp.delta }).epsilon,
    );

    // The coordinator unmasked one sum per round, covering both sites.
    const sums = coordinator.process.lines.filter((l) => l.msg === 'secure sum unmasked');
    expect(sums.map((l) => l.survivors)).toEqual([2, 2]);
    const published = coordinator.process.lines.filter(
      (l) => l.msg === 'privacy spent' && l.runId === created.id,
    );
    expect(published.map((l) => l.releases)).toEqual([1, 2]);

    // Each agent ledgered DP before each upload.
    for (const agent of agents) {
      const kinds = (await readFile(path.join(agent.home, 'ledger.jsonl'), 'utf8'))
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => (JSON.parse(l) as { kind: string }).kind);
      expect(kinds).toEqual(['download', 'privacy', 'upload', 'download', 'privacy', 'upload']);
    }
  }, 200_000);
});
