import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
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

/**
 * Helpers of the faults suite (test/faults/): a small consortium of real processes, a way to
 * arm the coordinator's fault hook, and the checks every fault scenario ends with — nothing
 * accepted was lost, and the published models equal an uninterrupted run's.
 */

/** The consortium every faults suite starts from, with its uninterrupted baseline run. */
export interface FaultConsortium {
  /** Temp dir holding the coordinator's data dir, the agents' homes and their data. */
  root: string;
  coordinator: CoordinatorHandle;
  /** alpha and beta, enrolled and running. */
  agents: AgentHandle[];
  /** The run of `opts.run('baseline')`, done with no fault. */
  baseline: RunView;
}

/**
 * Starts a coordinator and two agents (alpha, beta) in a temp dir named by `prefix`, then runs
 * the baseline to completion. Every process started is pushed onto `processes`, so the suite's
 * {@link stopFaultConsortium} stops them even when the start fails half-way.
 */
export async function startFaultConsortium(opts: {
  prefix: string;
  processes: ManagedProcess[];
  /** The run config of the suite (twoRoundRun, threeRoundRun). */
  run: (name: string) => Record<string, unknown>;
  /** Starts the coordinator in `root`; default: a plain one with its data in `root/coordinator`. */
  coordinator?: (root: string) => Promise<CoordinatorHandle>;
  /** Called between enrollment and the agents' start (e.g. to route them through proxies). */
  beforeAgentsStart?: (agents: AgentHandle[], coordinator: CoordinatorHandle) => Promise<void>;
  /** Receives `root` as soon as it exists (so teardown can remove it after a failed start). */
  onRoot?: (root: string) => void;
}): Promise<FaultConsortium> {
  const root = await mkdtemp(path.join(tmpdir(), opts.prefix));
  opts.onRoot?.(root);
  const coordinator = await (
    opts.coordinator ?? ((r) => startCoordinator({ dataDir: path.join(r, 'coordinator') }))
  )(root);
  opts.processes.push(coordinator.process);
  const agents = await enrollSites(coordinator, root, ['alpha', 'beta']);
  await opts.beforeAgentsStart?.(agents, coordinator);
  await startAgents(agents, opts.processes);
  const run = await coordinator.api.createRun(opts.run('baseline'));
  await coordinator.api.startRun(run.id);
  const baseline = await waitForRun(coordinator.api, run.id, { timeoutMs: 120_000 });
  return { root, coordinator, agents, baseline };
}

/**
 * The faults suites' teardown: dumps the logs if asked, stops every process, removes `root`.
 * `beforeStop` undoes what would keep a process from stopping (a frozen agent, a held link);
 * `afterStop` releases what the processes used (proxies, a tmpfs).
 */
export async function stopFaultConsortium(
  root: string | undefined,
  processes: ManagedProcess[],
  hooks: { beforeStop?: () => void; afterStop?: () => Promise<void> | void } = {},
): Promise<void> {
  await dumpLogsIfAsked(processes);
  hooks.beforeStop?.();
  await Promise.all(processes.map((p) => p.stop()));
  await hooks.afterStop?.();
  if (root) await rm(root, { recursive: true, force: true });
}

/** Resolves once the coordinator logs that `round` of `runId` trains (before any of its tasks is sent). */
export function whenRoundTrains(
  coordinator: CoordinatorHandle,
  runId: string,
  round: number,
): Promise<LogLine> {
  return coordinator.process.waitForLine(
    (l) => l.msg === 'round training' && l.runId === runId && l.round === round,
    `round ${round} of ${runId} to train`,
    120_000,
  );
}

/** Enrolls one agent per name on generated data (6 patients × 3 images, 48 px, seed 70 + i). */
export async function enrollSites(
  coordinator: CoordinatorHandle,
  root: string,
  names: string[],
): Promise<AgentHandle[]> {
  const agents: AgentHandle[] = [];
  for (const [i, name] of names.entries()) {
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
  return agents;
}

/** Edits an enrolled agent's config.json (e.g. to talk through a proxy, or upload in small chunks). */
export async function editAgentConfig(
  agent: AgentHandle,
  edit: { coordinatorUrl?: string; uploadChunkSize?: number },
): Promise<void> {
  const file = path.join(agent.home, 'config.json');
  const cfg = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...cfg, ...edit }, null, 2));
}

/** Starts every agent (sequentially: each waits until authenticated). */
export async function startAgents(agents: AgentHandle[], into: ManagedProcess[]): Promise<void> {
  for (const agent of agents) into.push(await startAgent(agent));
}

/** A fault for the coordinator's hook (coordinator/src/faults/fault-hook.ts). */
export interface ArmedFault {
  point: 'aggregation.before-publish' | 'aggregation.after-publish' | 'upload.chunk-write';
  action: 'crash' | 'enospc';
  runId?: string;
  round?: number;
}

/** Arms the fault hook of a coordinator started with FEDSSL_FAULT_FILE=file. */
export async function armFault(file: string, fault: ArmedFault): Promise<void> {
  await writeFile(file, JSON.stringify(fault));
}

/** Lines of `proc` logged after `since` lines were there, matching `msg` and the given fields. */
export function linesAfter(
  proc: ManagedProcess,
  since: number,
  msg: string,
  fields: Record<string, unknown> = {},
): LogLine[] {
  return proc.lines
    .slice(since)
    .filter((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v));
}

/** The published model hash of every round, in order. */
export const roundHashes = (run: RunView) => run.rounds.map((r) => r.modelSha256);

/**
 * The run completed with one attempt per round (no round had to be retried, so no accepted
 * update was thrown away) and every listed site accepted in every round with its 18 examples.
 */
export function expectEverySiteAccepted(run: RunView, agents: AgentHandle[], rounds: number): void {
  expect(run.state).toBe('completed');
  expect(run.rounds.map((r) => [r.round, r.attempt, r.state])).toEqual(
    Array.from({ length: rounds }, (_, i) => [i + 1, 1, 'published']),
  );
  for (const round of run.rounds) {
    const bySite = new Map<string, RunParticipant>(round.participants.map((p) => [p.siteId, p]));
    expect(round.participants).toHaveLength(agents.length);
    for (const agent of agents) {
      expect(bySite.get(agent.siteId)?.state, `${agent.name} in round ${round.round}`).toBe('accepted');
      expect(bySite.get(agent.siteId)?.exampleCount).toBe(18);
    }
  }
}

/**
 * Mounts a tmpfs of `sizeMb` at `dir` (a real full disk for the coordinator's data dir).
 * Returns false where mounting is not permitted (not root, no CAP_SYS_ADMIN).
 */
export function tryMountTmpfs(dir: string, sizeMb: number): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/**
 * Waits until `proc` has exited AND its stdout is fully read: the 'exit' event can come
 * before the last lines a killed process wrote have reached `proc.lines`.
 */
export async function exited(
  proc: ManagedProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const info = await proc.onExit();
  const out = proc.child.stdout;
  if (out && !out.closed) await new Promise<void>((r) => out.once('close', () => r()));
  // readline emits the lines of the last chunk in the same turn; let it run.
  await new Promise<void>((r) => setImmediate(r));
  return info;
}

/** With FEDSSL_FAULTS_LOG=<file>, writes every process's log lines there (a post-mortem aid). */
export async function dumpLogsIfAsked(processes: ManagedProcess[]): Promise<void> {
  const file = process.env.FEDSSL_FAULTS_LOG;
  if (!file) return;
  const lines = processes.flatMap((p) => [
    ...p.stderr,
    ...p.lines.map((l) => `${p.name} ${JSON.stringify(l)}`),
  ]);
  await writeFile(file, lines.join('\n'));
}
