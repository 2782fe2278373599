/**
 * Coordinator load: 200 simulated agents on one coordinator, heartbeat latency, RSS per round.
 *
 *   npm run bench -- load [--agents 200] [--stages 50,100,200] [--rounds 5] [--probes 10]
 *        [--profile DIR]   (CPU profile of the coordinator process)
 *
 * One real coordinator (`startCoordinator`, SQLite, its own child process so its RSS is its
 * own) on 127.0.0.1. This process plays the agents with the agent's own client code:
 * each site has its own Ed25519/X25519 keys, enrolls with a one-time token over HTTP
 * (`POST /api/v1/enroll`), connects over socket.io (WebSocket) with `CoordinatorClient`
 * (challenge–response auth with the site key; agents connect in waves of 25), verifies each task's coordinator signature,
 * and answers with a real sealed envelope of the tiny model's delta (no training: a
 * deterministic synthetic delta of the exact tensors and size, float32, 1 MiB chunks)
 * through the agent's `uploadUpdate` (`update:begin` / `update:chunk` / `update:commit`).
 *
 * - Heartbeat latency: each connected agent sends `--probes` acknowledged `status` messages
 *   one after the other (the gateway validates and records the status in the store before
 *   it acks), all agents at once, at 50, 100 and 200 connected agents, and again while the
 *   rounds run (uploads in flight).
 * - Rounds: a `--rounds` run with minSites = all agents; every update must be accepted
 *   (count per round == agents), and the coordinator's RSS is read after each round is
 *   published (after a GC); the slope of RSS over rounds is the soak figure.
 *
 * Prints tables, then `RESULT` lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import {
  fromBase64,
  generatePartyKeys,
  toBase64,
  verifySignedTask,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { encodeWeights } from '@fedssl/shared/codec';
import { tinyModelConfig, type ModelConfig } from '@fedssl/shared/model';
import {
  PROTOCOL_VERSION,
  type AgentStatus,
  type EnrollResponse,
  type SignedTask,
} from '@fedssl/shared/protocol';
import { CoordinatorClient } from '../site-agent/src/uplink/coordinator-client';
import { uploadUpdate } from '../site-agent/src/uplink/upload';
import { median, sealPlaintext, syntheticDelta } from './lib/updates';

const { values: opts } = parseArgs({
  options: {
    agents: { type: 'string', default: '200' },
    stages: { type: 'string', default: '50,100,200' },
    rounds: { type: 'string', default: '5' },
    probes: { type: 'string', default: '10' },
    child: { type: 'string' },
    /** Write a V8 CPU profile of the coordinator process to this folder. */
    profile: { type: 'string' },
  },
});

// Batch norm, as measured in docs/benchmarks.md.
const MODEL: ModelConfig = { ...tinyModelConfig(32), norm: 'batch' };
const MIB = 1024 * 1024;
const CONNECT_WAVE = 25;

// ---------------------------------------------------------------- coordinator child

type ChildRequest =
  | { id: number; cmd: 'tokens'; n: number }
  | { id: number; cmd: 'createRun'; body: unknown }
  | { id: number; cmd: 'run'; runId: string }
  | { id: number; cmd: 'rss' }
  | { id: number; cmd: 'close' };

async function childMain(dir: string): Promise<void> {
  const { startCoordinator } = await import('../coordinator/src/main');
  const { EnrollmentService } = await import('../coordinator/src/sites/enrollment.service');
  const { RunService } = await import('../coordinator/src/runs/run.service');
  const logger = pino({ level: 'error' }, pino.destination(2));
  const c = await startCoordinator(
    { host: '127.0.0.1', port: 0, dataDir: dir, databaseUrl: null, logLevel: 'error' },
    logger,
  );
  const runs = c.app.get(RunService);
  const enrollment = c.app.get(EnrollmentService);
  const gc = (globalThis as { gc?: () => void }).gc;
  const send = (m: unknown) => process.send!(m);
  process.on('message', (raw) => {
    const m = raw as ChildRequest;
    void (async () => {
      try {
        switch (m.cmd) {
          case 'tokens': {
            const tokens: string[] = [];
            for (let i = 0; i < m.n; i++) {
              tokens.push((await enrollment.issueToken(`Load site ${i}`, 3600)).token);
            }
            return send({ id: m.id, tokens });
          }
          case 'createRun': {
            const run = await runs.create(m.body);
            await runs.start(run.id);
            return send({ id: m.id, runId: run.id });
          }
          case 'run': {
            const d = await runs.get(m.runId);
            return send({
              id: m.id,
              state: d.state,
              rounds: d.rounds.map((r) => ({
                round: r.round,
                attempt: r.attempt,
                state: r.state,
                accepted: r.participants.filter((p) => p.state === 'accepted').length,
                tasks: r.participants.length,
                reason: r.reason,
                others: [
                  ...new Set(
                    r.participants
                      .filter((p) => p.state !== 'accepted')
                      .map((p) => `${p.state}: ${p.reason}`),
                  ),
                ].slice(0, 5),
              })),
            });
          }
          case 'rss': {
            gc?.();
            const mu = process.memoryUsage();
            return send({ id: m.id, rss: mu.rss, heapUsed: mu.heapUsed, external: mu.external });
          }
          case 'close':
            await c.close();
            send({ id: m.id });
            process.exit(0);
        }
      } catch (e) {
        send({ id: m.id, error: (e as Error).message });
      }
    })();
  });
  // The parent gone (finished or crashed): do not outlive it.
  process.on('disconnect', () => process.exit(0));
  send({ ready: true, url: c.url });
}

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

class Coordinator {
  private nextId = 1;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();
  private constructor(
    private readonly proc: ChildProcess,
    readonly url: string,
  ) {
    proc.on('message', (raw) => {
      const m = raw as { id?: number } & Record<string, unknown>;
      if (m.id !== undefined) this.waiting.get(m.id)?.(m);
    });
  }

  static start(dir: string): Promise<Coordinator> {
    const viteNode = join(__dirname, '..', 'node_modules', 'vite-node', 'vite-node.mjs');
    const prof = opts.profile ? ['--cpu-prof', `--cpu-prof-dir=${opts.profile}`] : [];
    const proc = spawn(
      process.execPath,
      ['--expose-gc', ...prof, viteNode, __filename, '--', '--child', dir],
      {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    );
    return new Promise((resolve, reject) => {
      proc.once('exit', (code) => reject(new Error(`coordinator exited with ${code}`)));
      proc.once('message', (m: { ready?: boolean; url?: string }) => {
        if (m.ready && m.url) resolve(new Coordinator(proc, m.url));
      });
    });
  }

  ask<T>(req: WithoutId<ChildRequest>): Promise<T> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (m) => {
        this.waiting.delete(id);
        if (typeof m.error === 'string') reject(new Error(m.error));
        else resolve(m as T);
      });
      this.proc.send({ ...req, id });
    });
  }
}

// ---------------------------------------------------------------- simulated agents

const silent = pino({ level: 'silent' });
const disconnectReasons = new Map<string, number>();

// All agents share this process: seal one envelope at a time with an I/O turn in between,
// so sockets keep answering the coordinator (and heartbeats are not timed behind 200 seals).
let sealChain: Promise<unknown> = Promise.resolve();
function sealInTurn<T>(fn: () => T): Promise<T> {
  const next = sealChain.then(() => new Promise<T>((resolve) => setTimeout(() => resolve(fn()), 0)));
  sealChain = next.catch(() => undefined);
  return next;
}
const IDLE: AgentStatus = { state: 'idle', backend: 'none', exampleCount: 100, agentVersion: 'load-bench' };

class SimAgent {
  client!: CoordinatorClient;
  accepted = 0;
  failures: string[] = [];
  private coordinatorSigning!: Uint8Array;
  private coordinatorBox!: Uint8Array;
  private readonly keys: PartyKeys = generatePartyKeys();
  siteId = '';

  disconnects = 0;

  constructor(
    private readonly index: number,
    /** The encoded delta (the same bytes for every agent; each seals its own envelope). */
    private readonly plaintext: Uint8Array,
  ) {}

  async enroll(url: string, token: string): Promise<void> {
    const res = await fetch(`${url}/api/v1/enroll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        token,
        signingPublicKey: toBase64(this.keys.signing.publicKey),
        boxPublicKey: toBase64(this.keys.box.publicKey),
        agentVersion: 'load-bench',
        protocolVersion: PROTOCOL_VERSION,
      }),
    });
    if (!res.ok) throw new Error(`enroll ${this.index}: HTTP ${res.status} ${await res.text()}`);
    const body = (await res.json()) as EnrollResponse;
    this.siteId = body.siteId;
    this.coordinatorSigning = fromBase64(body.coordinator.signingPublicKey, 32);
    this.coordinatorBox = fromBase64(body.coordinator.boxPublicKey, 32);
  }

  async connect(url: string): Promise<void> {
    this.client = new CoordinatorClient({
      url,
      siteId: this.siteId,
      signingSecretKey: this.keys.signing.secretKey,
      agentVersion: 'load-bench',
      logger: silent,
      requestTimeoutMs: 120_000,
    });
    this.client.socket.on('task:offer', (msg, ack) => {
      // Acked first, verified in turn: 200 agents share this process's CPU here, and 200
      // tweetnacl verifies in a burst would hold acks past the coordinator's 30 s offer
      // timeout. A real agent verifies before acking, on its own machine.
      ack({ ok: true });
      void this.answer(msg);
    });
    this.client.socket.on('disconnect', (reason) => {
      this.disconnects++;
      disconnectReasons.set(reason, (disconnectReasons.get(reason) ?? 0) + 1);
    });
    this.client.connect();
    this.client.setStatus(IDLE);
    await this.client.ready();
  }

  /** Seal the delta for this task and upload it with the agent's own upload code. */
  private async answer(offer: SignedTask): Promise<void> {
    try {
      const task = await sealInTurn(() => verifySignedTask(offer, this.coordinatorSigning));
      const sealed = await sealInTurn(() =>
        sealPlaintext(this.plaintext, {
          site: this.keys,
          siteId: this.siteId,
          coordinatorBoxPublicKey: this.coordinatorBox,
          chunkSize: MIB,
          exampleCount: 100 + this.index,
          task: {
            runId: task.runId,
            round: task.round,
            taskId: task.taskId,
            nonce: task.nonce,
            modelHash: task.modelHash,
          },
        }),
      );
      // As the agent does: retries within the task's deadline (lost links, a busy coordinator).
      await uploadUpdate({
        uplink: this.client,
        sealed,
        logger: silent,
        deadlineMs: Date.parse(task.deadline),
      });
      this.accepted++;
    } catch (e) {
      const message = (e as Error).message;
      this.failures.push(message);
      console.error(`agent ${this.index}: ${message}`);
    }
  }

  /** One acknowledged heartbeat: `status`, acked after the coordinator stored it. */
  async heartbeat(): Promise<number> {
    const emitter = this.client.socket.timeout(60_000) as unknown as {
      emitWithAck(ev: string, p: unknown): Promise<{ ok: boolean }>;
    };
    const t0 = process.hrtime.bigint();
    const ack = await emitter.emitWithAck('status', IDLE);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (!ack.ok) throw new Error(`status refused: ${JSON.stringify(ack)}`);
    return ms;
  }
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/**
 * Every agent sends `probes` heartbeats in sequence, all agents concurrently. A heartbeat
 * lost to a disconnection is counted, not timed.
 */
async function heartbeats(
  agents: readonly SimAgent[],
  probes: number,
): Promise<{ rtts: number[]; lost: number }> {
  const rtts: number[] = [];
  let lost = 0;
  await Promise.all(
    agents.map(async (a) => {
      for (let i = 0; i < probes; i++) {
        try {
          rtts.push(await a.heartbeat());
        } catch {
          lost++;
          await a.client.ready().catch(() => undefined);
        }
      }
    }),
  );
  return { rtts, lost };
}

/** Least-squares slope of ys over 1..n. */
function slope(ys: readonly number[]): number {
  const n = ys.length;
  const mx = (n + 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, i) => {
    num += (i + 1 - mx) * (y - my);
    den += (i + 1 - mx) ** 2;
  });
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  const total = Number(opts.agents);
  const stages = opts.stages
    .split(',')
    .map(Number)
    .filter((n) => n <= total);
  const rounds = Number(opts.rounds);
  const probes = Number(opts.probes);
  const dir = mkdtempSync(join(tmpdir(), 'fedssl-bench-load-'));
  const results: string[] = [];
  const result = (name: string, value: number | string, unit: string) =>
    results.push(`RESULT ${name}=${value} ${unit}`);
  const t0 = Date.now();
  const coordinator = await Coordinator.start(join(dir, 'coordinator'));
  try {
    const mib = (b: number) => b / MIB;
    const rss0 = await coordinator.ask<{ rss: number }>({ cmd: 'rss' });
    console.log(`coordinator up at ${coordinator.url}, RSS ${mib(rss0.rss).toFixed(0)} MiB`);

    const delta = syntheticDelta(MODEL, 1);
    const plaintext = encodeWeights(delta);
    const agents = Array.from({ length: total }, (_, i) => new SimAgent(i, plaintext));
    const { tokens } = await coordinator.ask<{ tokens: string[] }>({ cmd: 'tokens', n: total });
    const te = Date.now();
    for (let i = 0; i < total; i += 20) {
      await Promise.all(agents.slice(i, i + 20).map((a, k) => a.enroll(coordinator.url, tokens[i + k]!)));
    }
    console.log(`${total} sites enrolled over HTTP in ${((Date.now() - te) / 1000).toFixed(1)} s`);

    console.log(`\n## Heartbeat round trip (acked status, ${probes} per agent, all agents at once)\n`);
    console.log(
      '| connected agents | connect + auth (s) | heartbeats | p50 (ms) | p99 (ms) | coordinator RSS (MiB) |',
    );
    console.log(
      '| ---------------: | -----------------: | ---------: | -------: | -------: | --------------------: |',
    );
    let connected = 0;
    for (const n of stages) {
      const tc = Date.now();
      // Waves of CONNECT_WAVE: a whole stage at once can exceed the 10 s auth window on a
      // busy 2-core machine (both sides run tweetnacl Ed25519 per handshake).
      for (let i = connected; i < n; i += CONNECT_WAVE) {
        await Promise.all(
          agents.slice(i, Math.min(n, i + CONNECT_WAVE)).map((a) => a.connect(coordinator.url)),
        );
      }
      const connectS = (Date.now() - tc) / 1000;
      connected = n;
      const { rtts, lost } = await heartbeats(agents.slice(0, n), probes);
      if (lost) console.log(`(${lost} heartbeats lost to disconnections at ${n} agents)`);
      const { rss } = await coordinator.ask<{ rss: number }>({ cmd: 'rss' });
      const p50 = percentile(rtts, 50);
      const p99 = percentile(rtts, 99);
      console.log(
        `| ${n} | ${connectS.toFixed(1)} | ${rtts.length} | ${p50.toFixed(1)} | ${p99.toFixed(1)} | ${mib(rss).toFixed(0)} |`,
      );
      result(`load_heartbeat_p50_${n}_agents`, p50.toFixed(1), 'ms');
      result(`load_heartbeat_p99_${n}_agents`, p99.toFixed(1), 'ms');
      result(`load_rss_${n}_agents`, mib(rss).toFixed(0), 'MiB');
    }

    const active = agents.slice(0, connected);
    for (const a of active) a.disconnects = 0;
    disconnectReasons.clear();
    const { runId } = await coordinator.ask<{ runId: string }>({
      cmd: 'createRun',
      body: {
        name: 'load',
        rounds,
        minSites: active.length,
        roundDeadlineSeconds: 600,
        strategy: 'fedavg',
        seed: 1,
        model: MODEL,
        training: { maxStepsPerRound: 1 },
      },
    });
    const updateBytes = plaintext.length;
    console.log(
      `\n## ${rounds} rounds, ${active.length} agents, update = tiny model delta (${(updateBytes / 1e6).toFixed(2)} MB float32, sealed)\n`,
    );
    console.log(
      '| round | accepted / tasks | round time (s) | heartbeat p50 / p99 during the round (ms) | coordinator RSS after (MiB) |',
    );
    console.log(
      '| ----: | ---------------: | -------------: | ----------------------------------------: | --------------------------: |',
    );
    const rssByRound: number[] = [];
    const duringRtts: number[] = [];
    const failedAttempts: string[] = [];
    let lostDuring = 0;
    let acceptedTotal = 0;
    let lastEnd = Date.now();
    for (let r = 1; r <= rounds; r++) {
      // Heartbeats from a tenth of the agents while this round's uploads are in flight.
      const rtts: number[] = [];
      let busy = true;
      const probing = (async () => {
        const probers = active.filter((_, i) => i % 10 === 0);
        while (busy) {
          const h = await heartbeats(probers, 1);
          rtts.push(...h.rtts);
          lostDuring += h.lost;
        }
      })();
      let state: {
        state: string;
        rounds: {
          round: number;
          attempt: number;
          state: string;
          accepted: number;
          tasks: number;
          reason: string | null;
          others: string[];
        }[];
      };
      for (;;) {
        state = await coordinator.ask({ cmd: 'run', runId });
        // A failed attempt is retried by the engine; wait for the round's latest attempt.
        const row = state.rounds.filter((x) => x.round === r).at(-1);
        if (row?.state === 'published' || state.state === 'failed' || state.state === 'cancelled') break;
        await new Promise((res) => setTimeout(res, 1000));
      }
      busy = false;
      await probing;
      const attempts = state.rounds.filter((x) => x.round === r);
      const row = attempts.at(-1)!;
      for (const failed of attempts.slice(0, -1)) {
        failedAttempts.push(
          `round ${r} attempt ${failed.attempt}: ${failed.reason}; ${failed.others.join(' | ')}`,
        );
      }
      const seconds = (Date.now() - lastEnd) / 1000;
      lastEnd = Date.now();
      const { rss } = await coordinator.ask<{ rss: number }>({ cmd: 'rss' });
      rssByRound.push(mib(rss));
      duringRtts.push(...rtts);
      acceptedTotal += row.accepted;
      console.log(
        `| ${r} | ${row.accepted} / ${row.tasks} | ${seconds.toFixed(1)} | ${rtts.length ? `${percentile(rtts, 50).toFixed(1)} / ${percentile(rtts, 99).toFixed(1)}` : '–'} | ${mib(rss).toFixed(0)} |`,
      );
      if (row.state !== 'published') {
        const failures = active.flatMap((a) => a.failures);
        throw new Error(
          `round ${r} ended ${row.state} (${row.reason}), run ${state.state}; not accepted: ${row.others.join(' | ')}; agent-side failures ${failures.length}: ${[...new Set(failures)].slice(0, 5).join(' | ')}`,
        );
      }
    }
    for (const f of failedAttempts) console.log(`failed attempt (retried by the engine): ${f}`);
    const agentAccepted = active.reduce((n, a) => n + a.accepted, 0);
    const disconnects = active.reduce((n, a) => n + a.disconnects, 0);
    const failures = active.flatMap((a) => a.failures);
    const expected = rounds * active.length;
    const s = slope(rssByRound);
    // Noise: round-to-round spread of RSS around the fitted line.
    const my = rssByRound.reduce((a, b) => a + b, 0) / rssByRound.length;
    const mx = (rssByRound.length + 1) / 2;
    const resid = rssByRound.map((y, i) => y - (my + s * (i + 1 - mx)));
    const noise = Math.sqrt(resid.reduce((a, b) => a + b * b, 0) / Math.max(1, resid.length - 2));
    console.log(
      `\naccepted by the coordinator: ${acceptedTotal} of ${expected}; acknowledged to agents: ${agentAccepted}; agent-side failures: ${failures.length}${failures.length ? ` (first: ${failures[0]})` : ''}`,
    );
    console.log(
      `RSS over rounds: ${rssByRound.map((x) => x.toFixed(0)).join(', ')} MiB; slope ${s.toFixed(2)} MiB/round, residual spread ${noise.toFixed(2)} MiB; median ${median(rssByRound).toFixed(0)} MiB`,
    );
    console.log(
      `disconnections during the rounds: ${disconnects} (${[...disconnectReasons].map(([r, n]) => `${r}: ${n}`).join(', ') || 'none'}); heartbeats lost to them: ${lostDuring}; total ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    );
    result('load_updates_expected', expected, 'updates');
    result('load_updates_accepted', acceptedTotal, 'updates');
    result('load_round_attempts_failed', failedAttempts.length, 'count');
    result('load_updates_acknowledged_to_agents', agentAccepted, 'updates');
    if (duringRtts.length) {
      result('load_heartbeat_p50_during_rounds', percentile(duringRtts, 50).toFixed(1), 'ms');
      result('load_heartbeat_p99_during_rounds', percentile(duringRtts, 99).toFixed(1), 'ms');
    }
    result('load_disconnects_during_rounds', disconnects, 'count');
    result('load_rss_slope', s.toFixed(2), 'MiB/round');
    result('load_rss_residual_spread', noise.toFixed(2), 'MiB');
    result('load_rss_after_last_round', rssByRound.at(-1)!.toFixed(0), 'MiB');
    console.log('');
    for (const l of results) console.log(l);
    for (const a of agents) a.client?.close();
    if (acceptedTotal !== expected) process.exitCode = 1;
  } finally {
    await coordinator.ask({ cmd: 'close' }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

const fail = (e: unknown) => {
  console.error(e);
  process.exit(1);
};
if (opts.child) childMain(opts.child).catch(fail);
else main().catch(fail);
