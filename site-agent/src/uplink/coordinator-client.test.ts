import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { Server, type Socket as ServerSocket } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';
import { generatePartyKeys, toBase64, verifyBytes, type PartyKeys } from '@fedssl/shared/crypto';
import {
  AGENT_NAMESPACE,
  authChallengeBytes,
  type AgentStatus,
  type AgentToCoordinatorEvents,
  type CoordinatorToAgentEvents,
} from '@fedssl/shared/protocol';
import type { Clock } from './backoff';
import { CoordinatorClient } from './coordinator-client';

const logger = pino({ level: 'silent' });
type Srv = Server<AgentToCoordinatorEvents, CoordinatorToAgentEvents>;

interface Harness {
  url: string;
  io: Srv;
  statuses: AgentStatus[];
  connections: number;
  onAuthed?: (s: ServerSocket<AgentToCoordinatorEvents, CoordinatorToAgentEvents>) => void;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real socket.io server doing the coordinator's challenge–response for one site key. */
async function startServer(siteKeys: PartyKeys, siteId = 'site-a'): Promise<Harness> {
  const http = createServer();
  const io: Srv = new Server(http);
  const h: Harness = { url: '', io, statuses: [], connections: 0 };
  io.of(AGENT_NAMESPACE).on('connection', (socket) => {
    h.connections++;
    const auth = socket.handshake.auth as { siteId?: string; protocolVersion?: number };
    expect(auth).toMatchObject({ siteId, protocolVersion: 1 });
    const nonce = toBase64(randomBytes(32));
    socket.on('auth:response', ({ signature }) => {
      if (!verifyBytes(authChallengeBytes(nonce, siteId), signature, siteKeys.signing.publicKey)) {
        socket.emit('error', { code: 'SITE_AUTH_FAILED', message: 'bad signature' });
        socket.disconnect(true);
        return;
      }
      socket.on('status', (s) => h.statuses.push(s));
      socket.on('model:manifest', (_msg, ack) =>
        ack({ ok: false, error: { code: 'MODEL_VERSION_NOT_FOUND', message: 'no such version' } }),
      );
      socket.emit('auth:ok', { siteId, serverTime: new Date().toISOString() });
      h.onAuthed?.(socket);
    });
    socket.emit('auth:challenge', { nonce, serverTime: new Date().toISOString(), protocolVersion: 1 });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  h.url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  cleanups.push(() => new Promise<void>((resolve) => io.close(() => resolve())));
  return h;
}

function client(h: Harness, keys: PartyKeys, clock?: Clock): CoordinatorClient {
  const c = new CoordinatorClient({
    url: h.url,
    siteId: 'site-a',
    signingSecretKey: keys.signing.secretKey,
    agentVersion: 'test',
    logger,
    ...(clock ? { clock } : {}),
  });
  cleanups.push(() => c.close());
  return c;
}

const once = <T>(emitter: { once(ev: string, fn: (v: T) => void): unknown }, ev: string) =>
  new Promise<T>((resolve) => emitter.once(ev, resolve));

describe('CoordinatorClient', () => {
  it('answers the challenge with the site key, authenticates, and sends its status', async () => {
    const site = generatePartyKeys();
    const h = await startServer(site);
    const c = client(h, site);
    c.setStatus({ state: 'idle', backend: 'cpu', exampleCount: 12, agentVersion: 'test' });
    const gotStatus = new Promise<void>((resolve) => {
      h.onAuthed = (s) => s.once('status', () => resolve());
    });
    c.connect();
    await c.ready();
    expect(c.isAuthenticated).toBe(true);
    await gotStatus;
    expect(h.statuses).toEqual([{ state: 'idle', backend: 'cpu', exampleCount: 12, agentVersion: 'test' }]);
    // Acks: a coordinator refusal comes back as its coded error.
    await expect(c.request('model:manifest', { version: 'v9' })).rejects.toMatchObject({
      code: 'MODEL_VERSION_NOT_FOUND',
      message: 'coordinator refused model:manifest: no such version',
    });
  });

  it('a wrong key is refused for good: ready() rejects with the coordinator code, no reconnection', async () => {
    const site = generatePartyKeys();
    const h = await startServer(site);
    const sleeps: number[] = [];
    const clock: Clock = { now: () => Date.now(), sleep: async (ms) => void sleeps.push(ms) };
    const c = client(h, generatePartyKeys(), clock);
    const fatal = once<Error>(c, 'fatal');
    c.connect();
    await expect(c.ready()).rejects.toMatchObject({ code: 'SITE_AUTH_FAILED' });
    await fatal;
    expect(c.isAuthenticated).toBe(false);
    expect(sleeps).toEqual([]);
    await expect(c.request('model:manifest', { version: 'v1' })).rejects.toMatchObject({
      code: 'COORDINATOR_UNREACHABLE',
    });
  });

  it('reconnects with backoff after a server-side disconnect and authenticates again', async () => {
    const site = generatePartyKeys();
    const h = await startServer(site);
    const sleeps: number[] = [];
    const clock: Clock = { now: () => Date.now(), sleep: async (ms) => void sleeps.push(ms) };
    const c = client(h, site, clock);
    let first = true;
    h.onAuthed = (s) => {
      if (first) {
        first = false;
        s.disconnect(true);
      }
    };
    c.connect();
    await once(c, 'authenticated');
    await once(c, 'authenticated');
    expect(h.connections).toBe(2);
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeGreaterThanOrEqual(500);
    expect(sleeps[0]).toBeLessThanOrEqual(1500);
  });
});
