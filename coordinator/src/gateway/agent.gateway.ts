import { Inject, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import {
  ConnectedSocket,
  MessageBody,
  SubscribeMessage,
  WebSocketGateway,
  type OnGatewayConnection,
  type OnGatewayDisconnect,
  type OnGatewayInit,
} from '@nestjs/websockets';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Namespace } from 'socket.io';
import { keyId, toBase64, verifyBytes } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  agentHandshakeSchema,
  agentStatusSchema,
  authChallengeBytes,
  authResponseSchema,
  modelChunkRequestSchema,
  modelManifestRequestSchema,
  taskFailedSchema,
  taskProgressSchema,
  type AckError,
} from '@fedssl/shared/protocol';
import { LOGGER } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { ModelStoreService } from '../models/model-store.service';
import { RateLimitService } from '../ratelimit/rate-limit.service';
import { RoundEngine } from '../runs/round-engine';
import { formatIssues } from '../runs/run-config';
import { PresenceService } from '../sites/presence.service';
import { SiteRegistryService } from '../sites/site-registry.service';
import { rememberingVerifier } from '../sites/site-keys';
import { UploadService } from '../uploads/upload.service';
import { SocketAgentTransport, type AgentSocket } from './socket-agent-transport';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';

/** An agent that has not answered the challenge by then is disconnected. */
export const AUTH_TIMEOUT_MS = 10_000;

/** Per-socket state (socket.io's `socket.data`). */
interface AgentSocketData {
  siteId?: string;
  nonce?: string;
  authenticated?: boolean;
  /** Key id of the site key this connection authenticated with. */
  keyId?: string;
  authTimer?: NodeJS.Timeout;
  /** Client address the connection attempt was counted against (rate limit). */
  address?: string;
}

type Sock = AgentSocket & { data: AgentSocketData };

function ackError(e: unknown): AckError {
  if (isFedsslErrorLike(e)) return { ok: false, error: { code: e.code, message: e.message } };
  return { ok: false, error: { code: 'INTERNAL', message: 'internal error' } };
}

function parse<T>(
  schema: {
    safeParse(
      v: unknown,
    ):
      | { success: true; data: T }
      | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
  },
  v: unknown,
): T {
  const r = schema.safeParse(v);
  if (!r.success) throw new FedsslError('PROTOCOL_INVALID_MESSAGE', formatIssues(r.error.issues));
  return r.data;
}

/**
 * The agents' socket.io namespace: an adapter only (immich websocket.repository style).
 * It authenticates connections by challenge–response, validates every payload with the
 * shared schemas and hands it to a service; it keeps no round state.
 */
@WebSocketGateway({ namespace: AGENT_NAMESPACE })
export class AgentGateway
  implements OnGatewayInit, OnGatewayConnection, OnGatewayDisconnect, OnModuleInit, OnModuleDestroy
{
  private readonly log: Logger;
  private readonly onRevoked = (siteId: string): void =>
    this.disconnectSite(siteId, 'SITE_REVOKED', 'site was revoked');
  private readonly onKeyExpired = (siteId: string, keyId: string): void => {
    for (const s of [...this.transport.socketsOf(siteId)])
      if ((s as Sock).data.keyId === keyId)
        this.refuse(
          s as Sock,
          'SITE_KEY_EXPIRED',
          `site key ${keyId} was replaced and its grace period has ended; restart the agent with its new keys`,
        );
  };
  /** Every connected agent learns a coordinator key rotation at once (the chain, signed by the old key). */
  private readonly onKeysRotated = (): void => {
    const chain = this.keys.keyChain();
    for (const siteId of this.presence.onlineSiteIds())
      for (const s of this.transport.socketsOf(siteId)) s.emit('keys:announce', chain);
  };

  constructor(
    @Inject(SiteRegistryService) private readonly sites: SiteRegistryService,
    @Inject(PresenceService) private readonly presence: PresenceService,
    @Inject(ModelStoreService) private readonly models: ModelStoreService,
    @Inject(UploadService) private readonly uploads: UploadService,
    @Inject(RoundEngine) private readonly engine: RoundEngine,
    @Inject(SocketAgentTransport) private readonly transport: SocketAgentTransport,
    @Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService,
    @Inject(RateLimitService) private readonly limits: RateLimitService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'AgentGateway' });
  }

  onModuleInit(): void {
    this.presence.on('revoked', this.onRevoked);
    this.presence.on('key-expired', this.onKeyExpired);
    this.keys.on('rotated', this.onKeysRotated);
  }

  onModuleDestroy(): void {
    this.presence.off('revoked', this.onRevoked);
    this.presence.off('key-expired', this.onKeyExpired);
    this.keys.off('rotated', this.onKeysRotated);
  }

  /**
   * Frames the WebSocket layer itself rejects (beyond `maxHttpBufferSize`, invalid framing)
   * close the connection before socket.io sees a packet; they are logged here, per engine
   * connection, since no namespace socket may exist yet.
   */
  afterInit(nsp: Namespace): void {
    nsp.server.engine.on(
      'connection',
      (conn: { on(e: 'close', f: (r: string, d?: unknown) => void): void }) =>
        conn.on('close', (reason, description) => {
          if (reason !== 'transport error') return;
          const detail = description instanceof Error ? description.message : String(description);
          const code = /max payload|too (big|large)/i.test(detail)
            ? 'PROTOCOL_MESSAGE_TOO_LARGE'
            : 'PROTOCOL_INVALID_MESSAGE';
          this.log.warn({ code, reason: detail.slice(0, 200) }, 'agent protocol violation');
        }),
    );
  }

  /**
   * A packet socket.io cannot decode (malformed JSON, a binary frame nothing announced, too
   * many attachments) or a client-sent `error` event: logged, answered with a coded `error`
   * event, and the connection is closed (socket.io closes it too after a decode error).
   */
  private protocolViolation(socket: Sock, err: unknown): void {
    const detail = err instanceof Error ? err.message : 'client sent an "error" event';
    this.log.warn(
      { siteId: socket.data.siteId, code: 'PROTOCOL_INVALID_MESSAGE', reason: detail.slice(0, 200) },
      'agent protocol violation',
    );
    socket.emit('error', {
      code: 'PROTOCOL_INVALID_MESSAGE',
      message: `malformed socket.io packet: ${detail.slice(0, 200)}`,
    });
    socket.disconnect(true);
  }

  /** An event no handler listens to: refused (acked with a coded error when it asked for an ack). */
  private unknownEvent(socket: Sock, event: unknown, args: unknown[]): void {
    // socket.io also lets a client name an event with a number.
    if (typeof event === 'string' && (socket as unknown as NodeJS.EventEmitter).listeners(event).length > 0)
      return;
    const name = String(event).slice(0, 64);
    const code = 'PROTOCOL_INVALID_MESSAGE';
    this.log.warn({ siteId: socket.data.siteId, event: name, code }, 'agent message refused');
    const ack = args.at(-1);
    if (typeof ack === 'function')
      (ack as (r: AckError) => void)({
        ok: false,
        error: { code, message: `unknown event "${name}"` },
      });
  }

  /** Refuses with a coded `error` event, then disconnects. */
  private refuse(socket: Sock, code: string, message: string): void {
    this.log.warn({ siteId: socket.data.siteId, code }, 'agent connection refused');
    socket.emit('error', { code, message });
    socket.disconnect(true);
  }

  async handleConnection(socket: Sock): Promise<void> {
    // 'error' is socket.io's reserved event for decode errors; it is not in the typed event map.
    (socket as unknown as NodeJS.EventEmitter).on('error', (err: unknown) =>
      this.protocolViolation(socket, err),
    );
    socket.onAny((event: unknown, ...args: unknown[]) => this.unknownEvent(socket, event, args));
    // Counted before the site is looked up or a challenge made; given back on auth:ok.
    const address = this.limits.addressOf(socket.handshake.address, socket.handshake.headers);
    try {
      this.limits.attempt('agent-connect', address);
    } catch (e) {
      if (!isFedsslErrorLike(e)) throw e;
      // Not through refuse(): the limiter already logged this client once.
      socket.emit('error', { code: e.code, message: e.message });
      socket.disconnect(true);
      return;
    }
    socket.data.address = address;
    const hs = agentHandshakeSchema.safeParse(socket.handshake.auth);
    if (!hs.success)
      return this.refuse(
        socket,
        'PROTOCOL_INVALID_MESSAGE',
        `handshake auth: ${formatIssues(hs.error.issues)}`,
      );
    const { siteId, protocolVersion } = hs.data;
    socket.data.siteId = siteId;
    if (protocolVersion !== PROTOCOL_VERSION) {
      return this.refuse(
        socket,
        'PROTOCOL_VERSION_MISMATCH',
        `agent speaks protocol ${protocolVersion}, coordinator speaks ${PROTOCOL_VERSION}`,
      );
    }
    const site = await this.sites.get(siteId);
    if (socket.disconnected) return;
    if (!site) return this.refuse(socket, 'SITE_NOT_FOUND', `site ${siteId} is not registered`);
    if (site.status === 'revoked') return this.refuse(socket, 'SITE_REVOKED', `site ${siteId} is revoked`);
    if (site.status !== 'enrolled')
      return this.refuse(socket, 'SITE_AUTH_FAILED', `site ${siteId} has not completed enrollment`);

    const nonce = toBase64(randomBytes(32));
    socket.data.nonce = nonce;
    socket.data.authenticated = false;
    socket.data.authTimer = setTimeout(() => {
      if (!socket.data.authenticated)
        this.refuse(socket, 'SITE_AUTH_FAILED', 'no answer to the authentication challenge in time');
    }, AUTH_TIMEOUT_MS);
    socket.data.authTimer.unref();
    // The response listener is attached here, before the challenge is sent, so it cannot be missed.
    socket.once('auth:response', (msg) => {
      this.authenticate(socket, msg).catch((e: unknown) => {
        this.log.error({ err: e }, 'authentication failed unexpectedly');
        this.refuse(socket, 'SITE_AUTH_FAILED', 'authentication failed');
      });
    });
    socket.emit('auth:challenge', {
      nonce,
      serverTime: new Date().toISOString(),
      protocolVersion: PROTOCOL_VERSION,
    });
  }

  private async authenticate(socket: Sock, msg: unknown): Promise<void> {
    clearTimeout(socket.data.authTimer);
    const { siteId, nonce } = socket.data;
    const site = siteId === undefined ? undefined : await this.sites.get(siteId);
    if (socket.disconnected) return;
    const parsed = authResponseSchema.safeParse(msg);
    if (!siteId || !nonce || !site || site.status !== 'enrolled' || !parsed.success) {
      return this.refuse(socket, 'SITE_AUTH_FAILED', 'authentication failed');
    }
    const challenge = authChallengeBytes(nonce, siteId);
    let key: Uint8Array;
    const signedBy = rememberingVerifier((pk) => verifyBytes(challenge, parsed.data.signature, pk));
    try {
      // The current key, or a replaced one still in its grace period.
      key = this.sites.signingKeyFor(site, signedBy);
    } catch (e) {
      if (isFedsslErrorLike(e)) return this.refuse(socket, e.code, e.message);
      throw e;
    }
    if (!signedBy(key))
      return this.refuse(
        socket,
        'SITE_AUTH_FAILED',
        'challenge signature does not verify against the registered site key',
      );
    socket.data.authenticated = true;
    socket.data.keyId = keyId(key);
    if (socket.data.address !== undefined) this.limits.succeeded('agent-connect', socket.data.address);
    // Before anything signed by a newer key can reach the agent (socket.io keeps emit order).
    socket.emit('keys:announce', this.keys.keyChain());
    this.transport.attach(siteId, socket);
    this.presence.markOnline(siteId, socket.id);
    this.log.info({ siteId }, 'agent authenticated');
    socket.emit('auth:ok', { siteId, serverTime: new Date().toISOString() });
  }

  handleDisconnect(socket: Sock): void {
    clearTimeout(socket.data.authTimer);
    const { siteId, authenticated } = socket.data;
    if (siteId && authenticated) {
      this.transport.detach(siteId, socket);
      this.presence.markOffline(siteId, socket.id);
      this.log.info({ siteId }, 'agent disconnected');
    }
  }

  private disconnectSite(siteId: string, code: string, message: string): void {
    this.uploads.dropSite(siteId);
    for (const s of [...this.transport.socketsOf(siteId)]) this.refuse(s as Sock, code, message);
  }

  /** The authenticated site of a socket, or SITE_AUTH_FAILED. */
  private siteOf(socket: Sock): string {
    if (!socket.data.authenticated || !socket.data.siteId) {
      throw new FedsslError('SITE_AUTH_FAILED', 'connection is not authenticated');
    }
    return socket.data.siteId;
  }

  /**
   * Runs a handler for the socket's authenticated site; errors become a coded ack and a log
   * line with the code (UploadService logs its own refusals: `serviceLogs`).
   */
  private async handle<T extends object>(
    socket: Sock,
    event: string,
    fn: (siteId: string) => T | Promise<T>,
    serviceLogs = false,
  ): Promise<({ ok: true } & T) | AckError> {
    let siteId: string | undefined;
    try {
      siteId = this.siteOf(socket);
      return { ok: true, ...(await fn(siteId)) };
    } catch (e) {
      if (!isFedsslErrorLike(e)) this.log.error({ err: e, event }, 'agent handler failed');
      else if (!serviceLogs || siteId === undefined)
        this.log.warn({ siteId: siteId ?? socket.data.siteId, event, code: e.code }, 'agent message refused');
      return ackError(e);
    }
  }

  @SubscribeMessage('status')
  onStatus(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'status', async (siteId) => {
      await this.sites.recordStatus(siteId, parse(agentStatusSchema, body));
      return {};
    });
  }

  @SubscribeMessage('model:manifest')
  onModelManifest(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'model:manifest', () => {
      const { version } = parse(modelManifestRequestSchema, body);
      const m = this.models.getManifest(version);
      if (!m) throw new FedsslError('MODEL_VERSION_NOT_FOUND', `model version ${version} does not exist`);
      return m;
    });
  }

  @SubscribeMessage('model:chunk')
  onModelChunk(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'model:chunk', () => {
      const { version, offset, length } = parse(modelChunkRequestSchema, body);
      return { data: this.models.readChunk(version, offset, length) };
    });
  }

  @SubscribeMessage('task:progress')
  onTaskProgress(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'task:progress', (siteId) => {
      const p = parse(taskProgressSchema, body);
      this.log.debug({ siteId, taskId: p.taskId, step: p.step, totalSteps: p.totalSteps }, 'task progress');
      return {};
    });
  }

  @SubscribeMessage('task:failed')
  onTaskFailed(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'task:failed', async (siteId) => {
      const f = parse(taskFailedSchema, body);
      await this.engine.taskFailed(siteId, f.taskId, f.code, f.message);
      return {};
    });
  }

  @SubscribeMessage('update:begin')
  onUpdateBegin(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'update:begin', (siteId) => this.uploads.begin(siteId, body), true);
  }

  @SubscribeMessage('update:chunk')
  onUpdateChunk(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'update:chunk', (siteId) => this.uploads.chunk(siteId, body), true);
  }

  @SubscribeMessage('update:commit')
  onUpdateCommit(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(socket, 'update:commit', (siteId) => this.uploads.commit(siteId, body), true);
  }
}
