import 'reflect-metadata';
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { Module, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import pino from 'pino';
import { io, type Socket as ClientSocket } from 'socket.io-client';
import {
  describeCoordinatorKeys,
  generatePartyKeys,
  signBytes,
  signTask,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { tinyModelConfig, trainingConfigSchema } from '@fedssl/shared/model';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type AgentStatus,
  type AuthChallenge,
  type SignedTask,
} from '@fedssl/shared/protocol';
import { CLOCK, systemClock } from '../config/clock';
import { CONFIG, LOGGER } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { signingKeyFor, type SiteKeysView } from '../sites/site-keys';
import { ModelStoreService } from '../models/model-store.service';
import { RoundEngine } from '../runs/round-engine';
import { RateLimitService } from '../ratelimit/rate-limit.service';
import { PresenceService } from '../sites/presence.service';
import { SiteRegistryService } from '../sites/site-registry.service';
import { UploadService } from '../uploads/upload.service';
import { AgentGateway } from './agent.gateway';
import { SocketAgentTransport } from './socket-agent-transport';

const NEST_PROBES = new Set([
  'onModuleInit',
  'onModuleDestroy',
  'onApplicationBootstrap',
  'beforeApplicationShutdown',
  'onApplicationShutdown',
]);

/** A strict double: any member not given explicitly throws when used. */
function strict<T extends object>(name: string, members: Partial<Record<keyof T, unknown>> = {}): T {
  return new Proxy(members as T, {
    get(target, prop) {
      // Nest probes lifecycle hooks and promises; those are not calls.
      if (prop === 'then' || typeof prop === 'symbol' || NEST_PROBES.has(prop)) return undefined;
      if (prop in target) return (target as Record<string, unknown>)[prop];
      throw new Error(`unexpected call ${name}.${String(prop)}`);
    },
  });
}

interface SiteStub {
  id: string;
  name: string;
  signingPublicKey: string;
  status: 'pending' | 'enrolled' | 'revoked';
}

function once<T>(socket: ClientSocket, event: string): Promise<T> {
  return new Promise((resolve) => socket.once(event, (msg: T) => resolve(msg)));
}

describe('AgentGateway (real socket.io server on port 0)', () => {
  let app: INestApplication;
  let url: string;
  let presence: PresenceService;
  let transport: SocketAgentTransport;
  const sites = new Map<string, SiteStub>();
  const statuses: { siteId: string; status: AgentStatus }[] = [];
  const dropped: string[] = [];
  const clients: ClientSocket[] = [];
  const siteKeys: PartyKeys = generatePartyKeys();
  const coordinatorKeys = generatePartyKeys();
  const keyChain = {
    current: describeCoordinatorKeys(coordinatorKeys.signing.publicKey, coordinatorKeys.box.publicKey),
    chain: [],
  };

  beforeEach(async () => {
    sites.clear();
    statuses.length = 0;
    sites.set('site-a', {
      id: 'site-a',
      name: 'A',
      signingPublicKey: toBase64(siteKeys.signing.publicKey),
      status: 'enrolled',
    });
    sites.set('site-p', { id: 'site-p', name: 'P', signingPublicKey: '', status: 'pending' });

    @Module({
      providers: [
        AgentGateway,
        SocketAgentTransport,
        PresenceService,
        // The real limiter with its default limits (its own tests are in ratelimit/).
        RateLimitService,
        { provide: CONFIG, useValue: {} },
        { provide: CLOCK, useValue: systemClock },
        { provide: LOGGER, useValue: pino({ level: 'silent' }) },
        {
          provide: SiteRegistryService,
          useValue: strict<SiteRegistryService>('sites', {
            get: (id: string) => sites.get(id),
            signingKeyFor: (site: SiteKeysView, verifies: (pk: Uint8Array) => boolean) =>
              signingKeyFor(site, Date.now(), verifies),
            recordStatus: (siteId: string, status: AgentStatus) => statuses.push({ siteId, status }),
          }),
        },
        {
          provide: ModelStoreService,
          useValue: strict<ModelStoreService>('models', { getManifest: () => undefined }),
        },
        {
          provide: UploadService,
          useValue: strict<UploadService>('uploads', { dropSite: (id: string) => dropped.push(id) }),
        },
        { provide: RoundEngine, useValue: strict<RoundEngine>('engine') },
        {
          provide: CoordinatorKeysService,
          useValue: strict<CoordinatorKeysService>('keys', {
            keyChain: () => keyChain,
            on: () => undefined,
            off: () => undefined,
          }),
        },
      ],
    })
    class TestModule {}

    app = await NestFactory.create(TestModule, { logger: false });
    await app.listen(0, '127.0.0.1');
    url = `${await app.getUrl()}${AGENT_NAMESPACE}`.replace('[::1]', '127.0.0.1');
    presence = app.get(PresenceService);
    transport = app.get(SocketAgentTransport);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await app.close();
  });

  function connect(siteId: string, protocolVersion = PROTOCOL_VERSION): ClientSocket {
    const c = io(url, {
      auth: { siteId, protocolVersion, agentVersion: 'test' },
      transports: ['websocket'],
      reconnection: false,
    });
    clients.push(c);
    return c;
  }

  /** Connects and answers the challenge with `key`. */
  async function authenticate(siteId: string, secretKey: Uint8Array): Promise<ClientSocket> {
    const c = connect(siteId);
    const challenge = await once<AuthChallenge>(c, 'auth:challenge');
    expect(challenge.protocolVersion).toBe(PROTOCOL_VERSION);
    c.emit('auth:response', { signature: signBytes(authChallengeBytes(challenge.nonce, siteId), secretKey) });
    return c;
  }

  it('accepts the registered key, marks the site online, and serves authenticated events', async () => {
    const c = connect('site-a');
    const challenge = await once<AuthChallenge>(c, 'auth:challenge');
    // Before answering, every other event is refused.
    const early = await c.emitWithAck('status', {
      state: 'idle',
      backend: 'wasm',
      exampleCount: 1,
      agentVersion: 't',
    });
    expect(early).toEqual({
      ok: false,
      error: { code: 'SITE_AUTH_FAILED', message: 'connection is not authenticated' },
    });
    const online = new Promise<string>((resolve) => presence.once('online', resolve));
    const order: string[] = [];
    c.on('keys:announce', (msg: unknown) => {
      order.push('keys:announce');
      expect(msg).toEqual(keyChain);
    });
    c.once('auth:ok', () => order.push('auth:ok'));
    c.emit('auth:response', {
      signature: signBytes(authChallengeBytes(challenge.nonce, 'site-a'), siteKeys.signing.secretKey),
    });
    const ok = await once<{ siteId: string }>(c, 'auth:ok');
    // The key chain arrives before anything else, so the agent can follow a rotation first.
    expect(order).toEqual(['keys:announce', 'auth:ok']);
    expect(ok.siteId).toBe('site-a');
    expect(await online).toBe('site-a');
    expect(presence.onlineSiteIds()).toEqual(['site-a']);

    const status = { state: 'idle', backend: 'wasm', exampleCount: 12, agentVersion: 't' } as const;
    expect(await c.emitWithAck('status', status)).toEqual({ ok: true });
    expect(statuses).toEqual([{ siteId: 'site-a', status }]);
    expect(await c.emitWithAck('status', { state: 'bogus' })).toMatchObject({
      ok: false,
      error: { code: 'PROTOCOL_INVALID_MESSAGE' },
    });
    expect(await c.emitWithAck('model:manifest', { version: 'nope' })).toEqual({
      ok: false,
      error: { code: 'MODEL_VERSION_NOT_FOUND', message: 'model version nope does not exist' },
    });

    // The socket transport offers tasks over the connection and reads the ack.
    const coordinator = generatePartyKeys();
    const now = new Date().toISOString();
    const signed: SignedTask = signTask(
      {
        taskId: 'task-1',
        runId: 'run-1',
        round: 1,
        siteId: 'site-a',
        modelVersion: 'run-1.r0',
        modelHash: 'a'.repeat(64),
        model: tinyModelConfig(32),
        training: trainingConfigSchema.parse({}),
        nonce: toBase64(new Uint8Array(32)),
        issuedAt: now,
        deadline: now,
      },
      coordinator.signing.secretKey,
    );
    c.on('task:offer', (msg: SignedTask, ack: (r: unknown) => void) => {
      ack(
        msg.task.taskId === 'task-1'
          ? { ok: true }
          : { ok: false, error: { code: 'X', message: 'wrong task' } },
      );
    });
    expect(await transport.offerTask('site-a', signed)).toEqual({ accepted: true });
    expect(await transport.offerTask('site-b', signed)).toEqual({
      accepted: false,
      reason: 'site is offline',
    });

    const offline = new Promise<string>((resolve) => presence.once('offline', resolve));
    c.disconnect();
    expect(await offline).toBe('site-a');
    expect(presence.isOnline('site-a')).toBe(false);
  });

  it('refuses an unknown site with an error, then disconnects', async () => {
    const c = connect('site-x');
    const [err] = await Promise.all([
      once<{ code: string; message: string }>(c, 'error'),
      once(c, 'disconnect'),
    ]);
    expect(err).toEqual({ code: 'SITE_NOT_FOUND', message: 'site site-x is not registered' });
    expect(presence.onlineSiteIds()).toEqual([]);
  });

  it('refuses a pending site and a wrong protocol version', async () => {
    const p = connect('site-p');
    expect(await once(p, 'error')).toEqual({
      code: 'SITE_AUTH_FAILED',
      message: 'site site-p has not completed enrollment',
    });
    const v = connect('site-a', PROTOCOL_VERSION + 1);
    expect(await once(v, 'error')).toMatchObject({ code: 'PROTOCOL_VERSION_MISMATCH' });
  });

  it('refuses a challenge signed with the wrong key', async () => {
    const c = await authenticate('site-a', generatePartyKeys().signing.secretKey);
    const [err] = await Promise.all([once<{ code: string }>(c, 'error'), once(c, 'disconnect')]);
    expect(err).toEqual({
      code: 'SITE_AUTH_FAILED',
      message: 'challenge signature does not verify against the registered site key',
    });
    expect(presence.onlineSiteIds()).toEqual([]);
  });

  it('disconnects a site when it is revoked', async () => {
    const c = await authenticate('site-a', siteKeys.signing.secretKey);
    await once(c, 'auth:ok');
    const gone = Promise.all([once<{ code: string }>(c, 'error'), once(c, 'disconnect')]);
    sites.get('site-a')!.status = 'revoked';
    presence.announceRevoked('site-a');
    const [err] = await gone;
    expect(err.code).toBe('SITE_REVOKED');
    expect(dropped).toContain('site-a');
    const again = connect('site-a');
    expect(await once(again, 'error')).toEqual({ code: 'SITE_REVOKED', message: 'site site-a is revoked' });
  });
});
