import { Inject, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import {
  ConnectedSocket,
  MessageBody,
  SubscribeMessage,
  WebSocketGateway,
  type OnGatewayConnection,
  type OnGatewayDisconnect,
} from '@nestjs/websockets';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { toBase64, verifyBytes } from '@fedssl/shared/crypto';
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
import { RoundEngine } from '../runs/round-engine';
import { formatIssues } from '../runs/run-config';
import { PresenceService } from '../sites/presence.service';
import { SiteRegistryService } from '../sites/site-registry.service';
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
  authTimer?: NodeJS.Timeout;
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
export class AgentGateway implements OnGatewayConnection, OnGatewayDisconnect, OnModuleInit, OnModuleDestroy {
  private readonly log: Logger;
  private readonly onRevoked = (siteId: string): void =>
    this.disconnectSite(siteId, 'SITE_REVOKED', 'site was revoked');
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
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'AgentGateway' });
  }

  onModuleInit(): void {
    this.presence.on('revoked', this.onRevoked);
    this.keys.on('rotated', this.onKeysRotated);
  }

  onModuleDestroy(): void {
    this.presence.off('revoked', this.onRevoked);
    this.keys.off('rotated', this.onKeysRotated);
  }

  /** Refuses with a coded `error` event, then disconnects. */
  private refuse(socket: Sock, code: string, message: string): void {
    this.log.warn({ siteId: socket.data.siteId, code }, 'agent connection refused');
    socket.emit('error', { code, message });
    socket.disconnect(true);
  }

  async handleConnection(socket: Sock): Promise<void> {
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
    try {
      // The current key, or a replaced one still in its grace period.
      key = this.sites.signingKeyFor(site, (pk) => verifyBytes(challenge, parsed.data.signature, pk));
    } catch (e) {
      if (isFedsslErrorLike(e)) return this.refuse(socket, e.code, e.message);
      throw e;
    }
    const ok = verifyBytes(challenge, parsed.data.signature, key);
    if (!ok)
      return this.refuse(
        socket,
        'SITE_AUTH_FAILED',
        'challenge signature does not verify against the registered site key',
      );
    socket.data.authenticated = true;
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

  /** Runs a handler; errors become a coded ack. */
  private async handle<T extends object>(fn: () => T | Promise<T>): Promise<({ ok: true } & T) | AckError> {
    try {
      return { ok: true, ...(await fn()) };
    } catch (e) {
      if (!isFedsslErrorLike(e)) this.log.error({ err: e }, 'agent handler failed');
      return ackError(e);
    }
  }

  @SubscribeMessage('status')
  onStatus(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(async () => {
      await this.sites.recordStatus(this.siteOf(socket), parse(agentStatusSchema, body));
      return {};
    });
  }

  @SubscribeMessage('model:manifest')
  onModelManifest(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(() => {
      this.siteOf(socket);
      const { version } = parse(modelManifestRequestSchema, body);
      const m = this.models.getManifest(version);
      if (!m) throw new FedsslError('MODEL_VERSION_NOT_FOUND', `model version ${version} does not exist`);
      return m;
    });
  }

  @SubscribeMessage('model:chunk')
  onModelChunk(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(() => {
      this.siteOf(socket);
      const { version, offset, length } = parse(modelChunkRequestSchema, body);
      return { data: this.models.readChunk(version, offset, length) };
    });
  }

  @SubscribeMessage('task:progress')
  onTaskProgress(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(() => {
      const siteId = this.siteOf(socket);
      const p = parse(taskProgressSchema, body);
      this.log.debug({ siteId, taskId: p.taskId, step: p.step, totalSteps: p.totalSteps }, 'task progress');
      return {};
    });
  }

  @SubscribeMessage('task:failed')
  onTaskFailed(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(async () => {
      const siteId = this.siteOf(socket);
      const f = parse(taskFailedSchema, body);
      await this.engine.taskFailed(siteId, f.taskId, f.code, f.message);
      return {};
    });
  }

  @SubscribeMessage('update:begin')
  onUpdateBegin(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(() => this.uploads.begin(this.siteOf(socket), body));
  }

  @SubscribeMessage('update:chunk')
  onUpdateChunk(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(() => this.uploads.chunk(this.siteOf(socket), body));
  }

  @SubscribeMessage('update:commit')
  onUpdateCommit(@ConnectedSocket() socket: Sock, @MessageBody() body: unknown) {
    return this.handle(() => this.uploads.commit(this.siteOf(socket), body));
  }
}
