import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { io, type Socket } from 'socket.io-client';
import WebSocket from 'ws';
import { expect } from 'vitest';
import { fromBase64, signBytes, type PartyKeys } from '@fedssl/shared/crypto';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type Ack,
  type AuthChallenge,
  type CoordinatorKeys,
  type SignedTask,
  type Task,
} from '@fedssl/shared/protocol';
import { AdminTokenService } from '../../coordinator/src/admin/admin-token.service';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/src/main';
import { enrollRequest } from '../../coordinator/src/testing/enrollment';
import { RestClient, type RestRequest, type RestResponse } from '../../coordinator/src/testing/rest-client';
import { FakeAgent, testRunBody } from '../../coordinator/src/runs/federation.fixture';
import { RoundEngine } from '../../coordinator/src/runs/round-engine';
import { RunRepository } from '../../coordinator/src/runs/run.repository';

/**
 * A real coordinator for the hostile suite: the whole Nest app (REST + socket.io gateway) on
 * 127.0.0.1:0 over SQLite in a temp dir, its pino output captured line by line, and honest
 * or hostile agents that speak the protocol over real socket.io connections. Agents seal with
 * the federation fixture's {@link FakeAgent} (real envelope, real keys).
 */

/** One pino line as JSON. */
export type LogLine = { level: number; msg: string; code?: string; reason?: string } & Record<
  string,
  unknown
>;

/** Collects pino's JSON lines in memory. */
export class LogCapture extends Writable {
  readonly lines: LogLine[] = [];
  private partial = '';

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    const text = this.partial + chunk.toString('utf8');
    const parts = text.split('\n');
    this.partial = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') this.lines.push(JSON.parse(p) as LogLine);
    cb();
  }

  mark(): number {
    return this.lines.length;
  }

  since(mark: number): LogLine[] {
    return this.lines.slice(mark);
  }
}

export type HttpResult = Pick<RestResponse, 'status' | 'body'>;

/** What the sender of a hostile input got back: a coded ack, a coded `error` event, an HTTP error. */
export interface Refusal {
  code: string;
  message?: string;
}

/** An agent on a real socket.io connection; tasks offered to it are verified and acknowledged. */
export class AgentClient {
  readonly tasks: Task[] = [];
  private waiters: ((t: Task) => void)[] = [];
  readonly errors: Refusal[] = [];
  /** An envelope this agent had accepted earlier (the suite's control round), for replays. */
  replayable?: ReturnType<FakeAgent['seal']>;

  constructor(
    readonly agent: FakeAgent,
    readonly socket: Socket,
  ) {
    socket.on('task:offer', (st: SignedTask, ack: (r: Ack) => void) => {
      agent.onTask(st);
      const t = agent.tasks.at(-1)!;
      ack({ ok: true });
      this.tasks.push(t);
      this.waiters.shift()?.(t);
    });
    socket.on('error', (e: Refusal) => this.errors.push(e));
  }

  get siteId(): string {
    return this.agent.siteId;
  }

  /** The next task offered from now on. */
  nextTask(): Promise<Task> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  emit<T extends object = Record<never, never>>(event: string, msg: unknown): Promise<Ack<T>> {
    return this.socket.timeout(10_000).emitWithAck(event, msg) as Promise<Ack<T>>;
  }

  /** `update:begin` for a sealed envelope. */
  begin(sealed: {
    header: unknown;
    signature: string;
  }): Promise<Ack<{ uploadId: string; nextIndex: number }>> {
    return this.emit('update:begin', { header: sealed.header, signature: sealed.signature });
  }

  /**
   * Uploads a sealed envelope (begin, chunks in order, commit), optionally altering the
   * chunk list first. Returns the first refusal, or the commit's acceptance.
   */
  async upload(
    sealed: ReturnType<FakeAgent['seal']>,
    chunks: Uint8Array[] = sealed.chunks,
  ): Promise<Ack<{ accepted: true; updateId: string }>> {
    const begin = await this.begin(sealed);
    if (!begin.ok) return begin;
    for (const [index, data] of chunks.entries()) {
      const r = await this.emit('update:chunk', { uploadId: begin.uploadId, index, data });
      if (!r.ok) return r;
    }
    return this.emit('update:commit', { uploadId: begin.uploadId });
  }

  /** Resolves when the server disconnects this socket, with the last coded `error` event. */
  closedByServer(): Promise<Refusal | undefined> {
    if (this.socket.disconnected) return Promise.resolve(this.errors.at(-1));
    return new Promise((resolve) => this.socket.once('disconnect', () => resolve(this.errors.at(-1))));
  }

  close(): void {
    this.socket.disconnect();
  }
}

/** Files under a directory (recursive, relative names), sorted. */
export function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1))
    .sort();
}

/** The honest contributions every case's round ends with; their FedAvg is the expected aggregate. */
export const HONEST = [
  { name: 'Honest A', examples: 30, delta: 0.25 },
  { name: 'Honest B', examples: 10, delta: -0.05 },
] as const;

export class HostileCoordinator {
  readonly logs = new LogCapture();
  readonly dataDir = mkdtempSync(join(tmpdir(), 'fedssl-hostile-'));
  c!: RunningCoordinator;
  adminToken!: string;
  /** REST as admin unless a call names its own token. */
  rest!: RestClient;
  coordinator!: CoordinatorKeys;
  /** Every connection opened through this harness, closed between cases (but the honest ones). */
  private readonly opened: { socket: { disconnect(): void } | Closable; siteId?: string }[] = [];
  private names = 0;

  static async start(): Promise<HostileCoordinator> {
    const h = new HostileCoordinator();
    const logger = pino({ level: 'debug' }, h.logs);
    h.c = await startCoordinator(
      { host: '127.0.0.1', port: 0, dataDir: h.dataDir, databaseUrl: null, logLevel: 'debug' },
      logger,
    );
    h.adminToken = (await h.c.app.get(AdminTokenService).create('hostile-suite', 'admin')).token;
    h.rest = new RestClient(`${h.c.url}/api/v1`, h.adminToken);
    h.coordinator = (await h.api('GET', '/coordinator/keys')) as CoordinatorKeys;
    return h;
  }

  get url(): string {
    return this.c.url;
  }

  get repo(): RunRepository {
    return this.c.app.get(RunRepository);
  }

  get engine(): RoundEngine {
    return this.c.app.get(RoundEngine);
  }

  /** A REST call; `token: null` sends none. `raw` sends the string as the body. */
  http(method: string, path: string, opts: RestRequest = {}): Promise<HttpResult> {
    return this.rest.call(method, path, opts);
  }

  /** A REST call as admin that must succeed. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  api(method: string, path: string, body?: unknown): Promise<any> {
    return this.rest.ok(method, path, body);
  }

  /** Issues an enrollment token and enrolls a fresh site with its own keys. */
  async enroll(name = `Site ${++this.names}`, examples = 20, delta = 3): Promise<FakeAgent> {
    const tok = await this.api('POST', '/enrollment-tokens', { siteName: `${name} ${++this.names}` });
    const coordKeys = {
      signing: { publicKey: fromBase64(this.coordinator.signingPublicKey, 32) },
      box: { publicKey: fromBase64(this.coordinator.boxPublicKey, 32) },
    } as PartyKeys;
    const agent = new FakeAgent(tok.siteId as string, tok.siteName as string, coordKeys, examples, delta);
    await this.api('POST', '/enroll', enrollRequest(tok.token, agent.keys, 'hostile-suite'));
    return agent;
  }

  /** A socket.io connection to the agents' namespace with the given handshake auth (not yet answered). */
  socket(auth: unknown): Socket {
    const socket = io(`${this.c.url}${AGENT_NAMESPACE}`, {
      auth: auth as Record<string, unknown>,
      transports: ['websocket'],
      reconnection: false,
    });
    const siteId = (auth as { siteId?: unknown } | null)?.siteId;
    this.opened.push({ socket, ...(typeof siteId === 'string' ? { siteId } : {}) });
    return socket;
  }

  /** Registers another connection (raw WebSocket) to close between cases. */
  track(socket: Closable, siteId?: string): void {
    this.opened.push({ socket, ...(siteId ? { siteId } : {}) });
  }

  /** Closes every connection but `keep`'s; returns the site ids the closed ones named. */
  closeAllBut(keep: AgentClient[]): string[] {
    const kept = new Set<unknown>(keep.map((k) => k.socket));
    const closed: string[] = [];
    for (const o of this.opened.splice(0)) {
      if (kept.has(o.socket)) {
        this.opened.push(o);
        continue;
      }
      if ('disconnect' in o.socket) o.socket.disconnect();
      else o.socket.close();
      if (o.siteId) closed.push(o.siteId);
    }
    return closed;
  }

  /** Connects `agent` and answers the challenge with `signWith` (default its own key). */
  async connect(agent: FakeAgent, signWith: Uint8Array = agent.keys.signing.secretKey): Promise<AgentClient> {
    const socket = this.socket({
      siteId: agent.siteId,
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: 't',
    });
    const client = new AgentClient(agent, socket);
    const challenge = await new Promise<AuthChallenge>((resolve) => socket.once('auth:challenge', resolve));
    const ok = new Promise<void>((resolve, reject) => {
      socket.once('auth:ok', () => resolve());
      socket.once('disconnect', () =>
        reject(new Error(`${agent.siteId} was disconnected while authenticating`)),
      );
    });
    socket.emit('auth:response', {
      signature: signBytes(authChallengeBytes(challenge.nonce, agent.siteId), signWith),
    });
    await ok;
    return client;
  }

  /** Starts a one-round run over the connected `clients` and resolves with each one's task. */
  async startRound(clients: AgentClient[]): Promise<{ runId: string; tasks: Task[] }> {
    const waits = clients.map((c) => c.nextTask());
    const run = await this.api('POST', '/runs', testRunBody({ name: 'hostile', rounds: 1, minSites: 2 }));
    await this.api('POST', `/runs/${run.id as string}/start`);
    return { runId: run.id as string, tasks: await Promise.all(waits) };
  }

  /** Resolves when `runId`'s round `round` is published. */
  published(runId: string, round = 1): Promise<void> {
    return new Promise((resolve) => {
      const on = (e: { runId: string; round: number; state: string }) => {
        if (e.runId === runId && e.round === round && e.state === 'published') {
          this.engine.events.off('round', on);
          resolve();
        }
      };
      this.engine.events.on('round', on);
    });
  }

  /**
   * Everything the hostile input must not change: rounds, the honest sites' tasks, accepted
   * updates (rows and files), published versions. (An attacker's own unfinished upload is
   * not stored state; the suite checks that none survives its round.)
   */
  async snapshot(runId: string, honestSiteIds: string[]) {
    const rounds = (await this.repo.listRounds(runId)).map((r) => [r.round, r.attempt, r.state]);
    const tasks = [];
    for (const r of await this.repo.listRounds(runId))
      for (const t of await this.repo.listTasks(runId, r.round, r.attempt))
        if (honestSiteIds.includes(t.siteId)) tasks.push([t.siteId, t.state]);
    const updates = await this.repo.listUpdates(runId, 1, 1);
    return {
      rounds,
      tasks: tasks.sort(),
      updateCount: await this.repo.countUpdates(),
      updates: updates.map((u) => [u.siteId, u.exampleCount]).sort(),
      updateFiles: filesUnder(join(this.dataDir, 'updates')),
      models: filesUnder(join(this.dataDir, 'models')),
    };
  }

  /** Log lines since `mark` that carry error `code`. */
  coded(mark: number, code: string): LogLine[] {
    return this.logs.since(mark).filter((l) => l.code === code || l.reason?.startsWith(`${code}:`));
  }

  async close(): Promise<void> {
    this.closeAllBut([]);
    await this.engine.idle();
    await this.c.close();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** A connection that is closed with `close()` (raw WebSocket). */
export interface Closable {
  close(): void;
}

/** Asserts the sender got `code`. */
export function expectRefused(got: Ack | Refusal | undefined, code: string): void {
  const c = got && 'ok' in got ? (got.ok ? 'accepted' : got.error.code) : got?.code;
  expect(c, JSON.stringify(got)).toBe(code);
}

/**
 * A socket.io client written by hand over a raw WebSocket (engine.io v4 framing), so a test
 * can send what no well-behaved client would: malformed packets, stray binary frames,
 * oversized frames. Events of the agents' namespace are decoded as they arrive.
 */
export class RawAgent implements Closable {
  readonly events: [string, ...unknown[]][] = [];
  /** Acks received, by ack id. */
  readonly acks = new Map<number, unknown[]>();
  /** Resolves with the close code and reason once the server closes the WebSocket. */
  readonly closed: Promise<{ code: number; reason: string }>;
  private listeners: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() });
        this.notify();
      }),
    );
    ws.on('error', () => undefined);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const text = (data as Buffer).toString('utf8');
      if (text === '2') return ws.send('3'); // engine.io ping → pong
      const prefix = `42${AGENT_NAMESPACE},`;
      if (text.startsWith(prefix)) this.events.push(JSON.parse(text.slice(prefix.length)) as [string]);
      const ack = new RegExp(`^43${AGENT_NAMESPACE},(\\d+)(.*)$`).exec(text);
      if (ack) this.acks.set(Number(ack[1]), JSON.parse(ack[2]!) as unknown[]);
      this.notify();
    });
  }

  private notify(): void {
    for (const l of this.listeners.splice(0)) l();
  }

  /** Opens the WebSocket and joins the agents' namespace with `auth`. */
  static async open(h: HostileCoordinator, auth: unknown): Promise<RawAgent> {
    const ws = new WebSocket(`${h.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
    const raw = new RawAgent(ws);
    h.track(raw, (auth as { siteId?: string }).siteId);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(`40${AGENT_NAMESPACE},${JSON.stringify(auth)}`);
    return raw;
  }

  /** Opens, answers the challenge with the agent's key, and waits for `auth:ok`. */
  static async authenticated(h: HostileCoordinator, agent: FakeAgent): Promise<RawAgent> {
    const raw = await RawAgent.open(h, {
      siteId: agent.siteId,
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: 'raw',
    });
    const [, challenge] = await raw.next('auth:challenge');
    raw.emit('auth:response', {
      signature: signBytes(
        authChallengeBytes((challenge as AuthChallenge).nonce, agent.siteId),
        agent.keys.signing.secretKey,
      ),
    });
    await raw.next('auth:ok');
    return raw;
  }

  /** The first event named `name` received (now or later); rejects if the socket closes first. */
  async next(name: string): Promise<[string, ...unknown[]]> {
    for (;;) {
      const found = this.events.find((e) => e[0] === name);
      if (found) return found;
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed before ${name}`);
      await new Promise<void>((resolve) => this.listeners.push(resolve));
    }
  }

  /** The ack with id `id` (now or later); rejects if the socket closes first. */
  async nextAck(id: number): Promise<unknown[]> {
    for (;;) {
      const found = this.acks.get(id);
      if (found) return found;
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed before ack ${id}`);
      await new Promise<void>((resolve) => this.listeners.push(resolve));
    }
  }

  /** A well-formed event packet. */
  emit(name: string, ...args: unknown[]): void {
    this.ws.send(`42${AGENT_NAMESPACE},${JSON.stringify([name, ...args])}`);
  }

  /** Any frame at all. */
  send(data: string | Buffer): void {
    this.ws.send(data);
  }

  /**
   * What the server answered before closing: the coded `error` event if one came, else the
   * WebSocket close code as `WS_CLOSE_<code>`.
   */
  async refusal(): Promise<Refusal> {
    const { code } = await this.closed;
    const err = this.events.find((e) => e[0] === 'error');
    return err ? (err[1] as Refusal) : { code: `WS_CLOSE_${code}` };
  }

  close(): void {
    this.ws.terminate();
  }
}
