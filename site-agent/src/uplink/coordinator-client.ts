import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { io, type Socket } from 'socket.io-client';
import { signBytes } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  authChallengeBytes,
  authChallengeSchema,
  authOkSchema,
  type AgentHandshake,
  type AgentStatus,
  type AgentToCoordinatorEvents,
  type CoordinatorToAgentEvents,
} from '@fedssl/shared/protocol';
import { DEFAULT_BACKOFF, backoffDelay, systemClock, type BackoffPolicy, type Clock } from './backoff';
import {
  unwrapAck,
  type NotifyEvent,
  type NotifyPayload,
  type RequestEvent,
  type RequestPayload,
  type RequestResult,
  type Uplink,
} from './uplink';

/** The agent's side of the typed socket. */
export type AgentSocket = Socket<CoordinatorToAgentEvents, AgentToCoordinatorEvents>;

/** Coordinator error codes after which reconnecting cannot help. */
const FATAL_CODES = new Set([
  'SITE_REVOKED',
  'SITE_NOT_FOUND',
  'SITE_AUTH_FAILED',
  // The site's key was replaced and its grace period is over: restart with the new keys.
  'SITE_KEY_EXPIRED',
  'PROTOCOL_VERSION_MISMATCH',
]);

/** Options of {@link CoordinatorClient}. */
export interface CoordinatorClientOptions {
  /** Coordinator origin, e.g. `https://fedssl.example.org` (the namespace is appended). */
  url: string;
  siteId: string;
  /** The site's Ed25519 secret key: answers the auth challenge. */
  signingSecretKey: Uint8Array;
  agentVersion: string;
  logger: Logger;
  /** Reconnection backoff (socket.io's own, and ours after a refused handshake). */
  backoff?: BackoffPolicy;
  /** Ack timeout per request (default 60 s). */
  requestTimeoutMs?: number;
  clock?: Clock;
  random?: () => number;
}

/**
 * A site's connection to the coordinator: socket.io client on the agents namespace,
 * challenge–response authentication with the site key, reconnection with exponential
 * backoff and jitter, status after each (re)authentication.
 *
 * Events: `authenticated` (AuthOk) after every successful handshake, `fatal`
 * (FedsslError) when the coordinator refuses the site for good (revoked, unknown key).
 */
export class CoordinatorClient extends EventEmitter implements Uplink {
  readonly socket: AgentSocket;
  private authenticated = false;
  private closed = false;
  private fatalError: FedsslError | null = null;
  private status: AgentStatus | null = null;
  private retryTimer: Promise<void> | null = null;
  private readonly retryAbort = new AbortController();
  private refusedAttempts = 0;
  private readonly log: Logger;
  private readonly requestTimeoutMs: number;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoff: BackoffPolicy;

  constructor(private readonly opts: CoordinatorClientOptions) {
    super();
    this.log = opts.logger.child({ component: 'CoordinatorClient' });
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    const auth: AgentHandshake = {
      siteId: opts.siteId,
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: opts.agentVersion,
    };
    const base = opts.url.replace(/\/+$/, '');
    this.socket = io(`${base}${AGENT_NAMESPACE}`, {
      autoConnect: false,
      auth,
      // Long polling would need sticky sessions behind a load balancer; agents are servers.
      transports: ['websocket'],
      reconnection: true,
      reconnectionDelay: this.backoff.initialMs,
      reconnectionDelayMax: this.backoff.maxMs,
      randomizationFactor: this.backoff.jitter,
    });
    this.wire();
  }

  private wire(): void {
    const s = this.socket;
    s.on('connect', () => {
      this.log.info({ event: 'connect' }, 'connected to coordinator, waiting for challenge');
    });
    s.on('auth:challenge', (msg) => {
      const parsed = authChallengeSchema.safeParse(msg);
      if (!parsed.success) {
        this.log.warn({ event: 'auth:challenge' }, 'malformed auth challenge ignored');
        return;
      }
      if (parsed.data.protocolVersion !== PROTOCOL_VERSION) {
        this.fail(
          new FedsslError(
            'PROTOCOL_VERSION_MISMATCH',
            `coordinator speaks protocol ${parsed.data.protocolVersion}, this agent ${PROTOCOL_VERSION}`,
          ),
        );
        return;
      }
      const signature = signBytes(
        authChallengeBytes(parsed.data.nonce, this.opts.siteId),
        this.opts.signingSecretKey,
      );
      s.emit('auth:response', { signature });
    });
    s.on('auth:ok', (msg) => {
      const parsed = authOkSchema.safeParse(msg);
      if (!parsed.success || parsed.data.siteId !== this.opts.siteId) {
        this.log.warn({ event: 'auth:ok' }, 'malformed auth:ok ignored');
        return;
      }
      this.authenticated = true;
      this.refusedAttempts = 0;
      this.log.info({ siteId: parsed.data.siteId, serverTime: parsed.data.serverTime }, 'authenticated');
      if (this.status) s.emit('status', this.status);
      this.emit('authenticated', parsed.data);
    });
    s.on('error', (msg) => {
      const code = typeof msg?.code === 'string' ? msg.code : 'UNKNOWN';
      this.log.warn({ code, message: msg?.message }, 'coordinator reported an error');
      if (FATAL_CODES.has(code)) {
        this.fail(
          new FedsslError(
            code as 'SITE_REVOKED' | 'SITE_KEY_EXPIRED',
            `coordinator refused this site: ${String(msg?.message ?? code)}`,
          ),
        );
      }
    });
    s.on('disconnect', (reason) => {
      this.authenticated = false;
      this.log.warn({ reason }, 'disconnected from coordinator');
      // A server-side disconnect is not retried by socket.io; retry unless it was fatal.
      if (reason === 'io server disconnect') this.scheduleReconnect();
    });
    s.on('connect_error', (err) => {
      this.log.warn({ err: err.message }, 'cannot connect to coordinator');
      // socket.active is false when the server's middleware refused us: socket.io gives up then.
      if (!s.active) this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.closed || this.fatalError || this.retryTimer) return;
    const delay = backoffDelay(this.refusedAttempts++, this.backoff, this.random);
    this.log.info({ delayMs: delay }, 'reconnecting after backoff');
    this.retryTimer = this.clock
      .sleep(delay, this.retryAbort.signal)
      .then(() => {
        this.retryTimer = null;
        if (!this.closed && !this.fatalError) this.socket.connect();
      })
      .catch(() => {
        this.retryTimer = null;
      });
  }

  private fail(err: FedsslError): void {
    if (this.fatalError) return;
    this.fatalError = err;
    this.log.error({ code: err.code }, err.message);
    this.socket.disconnect();
    this.emit('fatal', err);
  }

  /** Start connecting (returns at once; see {@link ready}). */
  connect(): void {
    this.socket.connect();
  }

  /** True between `auth:ok` and the next disconnect. */
  get isAuthenticated(): boolean {
    return this.authenticated;
  }

  /** The error that ended this client for good, if any. */
  get fatal(): FedsslError | null {
    return this.fatalError;
  }

  /** Resolves once authenticated; rejects on a fatal refusal, on close, or when aborted. */
  ready(signal?: AbortSignal): Promise<void> {
    if (this.fatalError) return Promise.reject(this.fatalError);
    if (this.closed) return Promise.reject(new FedsslError('COORDINATOR_UNREACHABLE', 'connection closed'));
    if (this.authenticated) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        this.off('authenticated', onOk);
        this.off('fatal', onFatal);
        this.off('closed', onClosed);
        signal?.removeEventListener('abort', onAbort);
      };
      const onOk = () => {
        cleanup();
        resolve();
      };
      const onFatal = (e: FedsslError) => {
        cleanup();
        reject(e);
      };
      const onClosed = () => {
        cleanup();
        reject(new FedsslError('COORDINATOR_UNREACHABLE', 'connection closed'));
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason as Error);
      };
      this.on('authenticated', onOk);
      this.on('fatal', onFatal);
      this.on('closed', onClosed);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** {@inheritDoc Uplink.request} */
  async request<E extends RequestEvent>(event: E, payload: RequestPayload<E>): Promise<RequestResult<E>> {
    if (!this.authenticated)
      throw new FedsslError('COORDINATOR_UNREACHABLE', `not connected: cannot send ${event}`);
    let ack: unknown;
    try {
      // The typed emitWithAck cannot see through the generic event; the payload type is checked by the signature above.
      const emitter = this.socket.timeout(this.requestTimeoutMs) as unknown as {
        emitWithAck(ev: string, p: unknown): Promise<unknown>;
      };
      ack = await emitter.emitWithAck(event, payload);
    } catch (e) {
      throw new FedsslError('COORDINATOR_UNREACHABLE', `no answer to ${event}: ${(e as Error).message}`);
    }
    return unwrapAck(event, ack) as RequestResult<E>;
  }

  /** {@inheritDoc Uplink.notify} */
  notify<E extends NotifyEvent>(event: E, payload: NotifyPayload<E>): void {
    (this.socket as unknown as { emit(ev: string, p: unknown): void }).emit(event, payload);
  }

  /** Remember and send the agent status (re-sent after every reconnection). */
  setStatus(status: AgentStatus): void {
    this.status = status;
    if (this.authenticated) this.socket.emit('status', status);
  }

  /** Close for good: no more reconnection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.retryAbort.abort(new Error('closed'));
    this.socket.disconnect();
    this.socket.removeAllListeners();
    this.emit('closed');
  }
}
