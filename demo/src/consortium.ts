import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { ManagedProcess } from './processes';
import { BINS, runNode, startNode, type LogLine } from './processes';

/**
 * A consortium on one machine, every party a real process on 127.0.0.1: the coordinator, and
 * site agents with their own homes and keys. Used by `npm run demo` and the end-to-end tests.
 */

export interface RunParticipant {
  siteId: string;
  siteName?: string;
  state: string;
  exampleCount: number | null;
  metrics: Record<string, number> | null;
  reason: string | null;
}
export interface RoundView {
  round: number;
  attempt: number;
  state: string;
  modelVersion: string | null;
  modelSha256: string | null;
  participants: RunParticipant[];
}
export interface RunView {
  id: string;
  name: string;
  state: string;
  currentRound: number;
  latestModelVersion: string | null;
  rounds: RoundView[];
}

/** Thin fetch client of the admin REST API (the same API `fedssl-admin` uses). */
export class AdminApi {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
  ) {}

  async request<T>(method: string, route: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.baseUrl}/api/v1${route}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${route} → HTTP ${res.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  createEnrollmentToken(siteName: string): Promise<{ token: string; siteId: string; siteName: string }> {
    return this.request('POST', '/enrollment-tokens', { siteName });
  }
  createRun(config: unknown): Promise<RunView> {
    return this.request('POST', '/runs', config);
  }
  startRun(runId: string): Promise<RunView> {
    return this.request('POST', `/runs/${encodeURIComponent(runId)}/start`);
  }
  getRun(runId: string): Promise<RunView> {
    return this.request('GET', `/runs/${encodeURIComponent(runId)}`);
  }
  listSites(): Promise<
    { id: string; name: string; online: boolean; status: string; signingPublicKey: string }[]
  > {
    return this.request('GET', '/sites');
  }
}

export interface CoordinatorHandle {
  process: ManagedProcess;
  url: string;
  dataDir: string;
  adminToken: string;
  api: AdminApi;
}

/** Creates the first admin token, then starts `fedssl-coordinator serve` on a free port. */
export async function startCoordinator(opts: {
  dataDir: string;
  env?: NodeJS.ProcessEnv;
  onLine?: (name: string, line: LogLine) => void;
  adminToken?: string;
}): Promise<CoordinatorHandle> {
  await mkdir(opts.dataDir, { recursive: true });
  const env = {
    FEDSSL_DATA_DIR: opts.dataDir,
    FEDSSL_HOST: '127.0.0.1',
    FEDSSL_LOG_LEVEL: 'info',
    ...opts.env,
  };
  const adminToken =
    opts.adminToken ??
    (await runNode(BINS.coordinator, ['bootstrap-admin', '--name', 'demo-admin'], env)).stdout.trim();
  const proc = startNode(
    'coordinator',
    BINS.coordinator,
    ['serve'],
    { FEDSSL_PORT: '0', ...env },
    opts.onLine,
  );
  const ready = await proc.waitForLine((l) => l.msg === 'coordinator listening', 'the coordinator to listen');
  const url = String(ready.url);
  return { process: proc, url, dataDir: opts.dataDir, adminToken, api: new AdminApi(url, adminToken) };
}

export interface AgentHandle {
  name: string;
  siteId: string;
  home: string;
  process?: ManagedProcess;
}

/** `fedssl-agent init` + `enroll` for one site, as hospital IT would run them. */
export async function enrollAgent(opts: {
  coordinator: CoordinatorHandle;
  name: string;
  home: string;
  dataPath: string;
  imageSize?: number;
}): Promise<AgentHandle> {
  const { token, siteId } = await opts.coordinator.api.createEnrollmentToken(opts.name);
  await runNode(BINS.agent, [
    'init',
    '--home',
    opts.home,
    '--data',
    opts.dataPath,
    ...(opts.imageSize ? ['--image-size', String(opts.imageSize)] : []),
  ]);
  await runNode(BINS.agent, [
    'enroll',
    '--home',
    opts.home,
    '--coordinator',
    opts.coordinator.url,
    '--token',
    token,
  ]);
  return { name: opts.name, siteId, home: opts.home };
}

/** Starts `fedssl-agent run` and waits until the coordinator has authenticated it. */
export async function startAgent(
  agent: AgentHandle,
  opts: { env?: NodeJS.ProcessEnv; args?: string[]; onLine?: (name: string, line: LogLine) => void } = {},
): Promise<ManagedProcess> {
  const proc = startNode(
    agent.name,
    BINS.agent,
    // Several agents share this one machine: one training thread each (a hospital's agent uses its cores).
    ['run', '--home', agent.home, '--backend', 'auto', '--train-workers', '1', ...(opts.args ?? [])],
    { FEDSSL_LOG_LEVEL: 'info', ...opts.env },
    opts.onLine,
  );
  agent.process = proc;
  await proc.waitForLine(
    (l) => l.msg === 'authenticated',
    `${agent.name} to authenticate with the coordinator`,
    120_000,
  );
  return proc;
}

/** Polls the run until it leaves the running states; calls `onRound` once for each newly published round. */
export async function waitForRun(
  api: AdminApi,
  runId: string,
  opts: { timeoutMs: number; onRound?: (round: RoundView) => void; pollMs?: number },
): Promise<RunView> {
  const reported = new Set<string>();
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const run = await api.getRun(runId);
    for (const round of run.rounds) {
      const key = `${round.round}.${round.attempt}`;
      if (round.state === 'published' && !reported.has(key)) {
        reported.add(key);
        opts.onRound?.(round);
      }
    }
    if (['completed', 'failed', 'cancelled'].includes(run.state)) return run;
    if (Date.now() > deadline) throw new Error(`run ${runId} still ${run.state} after ${opts.timeoutMs} ms`);
    // Polling the admin API is what an operator's console does; this is the demo's clock, not a test wait.
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 500));
  }
}

/** Path helper so every artefact of one consortium lives under one folder. */
export function consortiumPaths(root: string) {
  return {
    root,
    coordinatorData: path.join(root, 'coordinator'),
    siteData: (name: string) => path.join(root, 'data', name),
    siteHome: (name: string) => path.join(root, 'agents', name),
  };
}
