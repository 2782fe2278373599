import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GenericContainer,
  Network,
  Wait,
  getContainerRuntimeClient,
  type StartedNetwork,
  type StartedTestContainer,
} from 'testcontainers';
import { AdminApi, waitForRun, type RunView } from '@fedssl/demo';
import { twoRoundRun } from '../support/scenario';

/**
 * The end-to-end scenario of test/e2e, with the coordinator and two site agents in containers
 * built from deploy/docker. Runs where a Docker engine is reachable; elsewhere it is skipped
 * with one line saying so (the same scenario runs as real processes in test/e2e).
 */
const REPO_ROOT = path.resolve(__dirname, '..', '..');

async function dockerAvailable(): Promise<boolean> {
  try {
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

const hasDocker = await dockerAvailable();
if (!hasDocker) {
  console.warn(
    'containers suite skipped: no Docker engine found (the same scenario runs as real processes in test/e2e)',
  );
}

describe.skipIf(!hasDocker)('federated round in containers', () => {
  let network: StartedNetwork;
  let coordinator: StartedTestContainer;
  const agents: StartedTestContainer[] = [];
  let run: RunView;

  beforeAll(async () => {
    const [coordinatorImage, agentImage] = await Promise.all([
      GenericContainer.fromDockerfile(REPO_ROOT, 'deploy/docker/coordinator.Dockerfile').build(
        'fedssl-coordinator:test',
        { deleteOnExit: false },
      ),
      GenericContainer.fromDockerfile(REPO_ROOT, 'deploy/docker/site-agent.Dockerfile').build(
        'fedssl-site-agent:test',
        { deleteOnExit: false },
      ),
    ]);
    network = await new Network().start();
    coordinator = await coordinatorImage
      .withNetwork(network)
      .withNetworkAliases('coordinator')
      .withExposedPorts(8080)
      .withWaitStrategy(Wait.forHttp('/api/v1/healthz', 8080))
      .start();
    const boot = await coordinator.exec([
      'node',
      '/app/coordinator/dist/cli/coordinator-cli.js',
      'bootstrap-admin',
    ]);
    const adminToken = boot.stdout.trim();
    const api = new AdminApi(
      `http://${coordinator.getHost()}:${coordinator.getMappedPort(8080)}`,
      adminToken,
    );

    for (const name of ['alpha', 'beta']) {
      const { token } = await api.createEnrollmentToken(name);
      // One container per site: generate its data, init, enroll, then run the agent.
      const script = [
        `node /app/demo/dist/generate-data.js --out /var/lib/fedssl-agent/data --patients 6 --images-per-patient 3 --seed ${name.length}`,
        'node /app/site-agent/dist/cli/agent-cli.js init --home /var/lib/fedssl-agent --data /var/lib/fedssl-agent/data',
        `node /app/site-agent/dist/cli/agent-cli.js enroll --home /var/lib/fedssl-agent --coordinator http://coordinator:8080 --token ${token}`,
        'exec node /app/site-agent/dist/cli/agent-cli.js run --home /var/lib/fedssl-agent',
      ].join(' && ');
      agents.push(
        await agentImage
          .withNetwork(network)
          .withEntrypoint(['sh', '-c'])
          .withCommand([script])
          .withWaitStrategy(Wait.forLogMessage(/"msg":"authenticated"/))
          .start(),
      );
    }

    const created = await api.createRun(twoRoundRun('containers'));
    await api.startRun(created.id);
    run = await waitForRun(api, created.id, { timeoutMs: 600_000 });
  }, 1_800_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await coordinator?.stop();
    await network?.stop();
  });

  it('completes two rounds with both sites accepted in each', () => {
    expect(run.state).toBe('completed');
    const published = run.rounds.filter((r) => r.state === 'published');
    expect(published).toHaveLength(2);
    for (const round of published) {
      expect(round.participants.filter((p) => p.state === 'accepted')).toHaveLength(2);
    }
  });
});
