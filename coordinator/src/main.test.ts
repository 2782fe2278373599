import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { io, type Socket } from 'socket.io-client';
import { generatePartyKeys, signBytes, type PartyKeys } from '@fedssl/shared/crypto';
import {
  AGENT_NAMESPACE,
  MAX_CHUNK_BYTES,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type AuthChallenge,
} from '@fedssl/shared/protocol';
import { AdminTokenService } from './admin/admin-token.service';
import { MAX_HTTP_BUFFER_SIZE } from './admin/http/listen';
import { startCoordinator, type RunningCoordinator } from './main';
import { EnrollmentService } from './sites/enrollment.service';
import { enrollRequest } from './testing/enrollment';

describe('startCoordinator: HTTP and socket.io on one port', () => {
  let dir: string;
  let c: RunningCoordinator;
  let siteId: string;
  let party: PartyKeys;
  const clients: Socket[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-main-'));
    c = await startCoordinator(
      { host: '127.0.0.1', port: 0, dataDir: dir, databaseUrl: null, logLevel: 'silent' },
      pino({ level: 'silent' }),
    );
    const enrollment = c.app.get(EnrollmentService);
    const issued = await enrollment.issueToken('Frames', 600);
    party = generatePartyKeys();
    await enrollment.enroll(enrollRequest(issued.token, party, 't'));
    siteId = issued.siteId;
  });
  afterAll(async () => {
    for (const s of clients) s.close();
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Connects as an enrolled site and waits for the challenge (the socket stays open, unauthenticated). */
  async function connected(): Promise<Socket> {
    return (await challenged()).socket;
  }

  async function challenged(): Promise<{ socket: Socket; challenge: AuthChallenge }> {
    const s = io(`${c.url}${AGENT_NAMESPACE}`, {
      auth: { siteId, protocolVersion: PROTOCOL_VERSION, agentVersion: 't' },
      transports: ['websocket'],
      reconnection: false,
    });
    clients.push(s);
    const challenge = await new Promise<AuthChallenge>((resolve) => s.once('auth:challenge', resolve));
    return { socket: s, challenge };
  }

  /** Sends `bytes` of padding; resolves with the ack, or with 'disconnected' if the server dropped the frame. */
  function send(s: Socket, bytes: number): Promise<unknown> {
    return new Promise((resolve) => {
      s.once('disconnect', (reason) => resolve(`disconnected: ${reason}`));
      s.emit('status', { pad: new Uint8Array(bytes) }, (ack: unknown) => resolve(ack));
    });
  }

  it('serves REST under /api/v1 on the same port', async () => {
    const res = await fetch(`${c.url}/api/v1/healthz`);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('accepts a frame carrying a full chunk, and drops frames over the limit', async () => {
    expect(MAX_HTTP_BUFFER_SIZE).toBe(MAX_CHUNK_BYTES + 64 * 1024);
    const s = await connected();
    // Reaches the gateway (which refuses it only because the socket is not authenticated).
    expect(await send(s, MAX_CHUNK_BYTES)).toMatchObject({ ok: false, error: { code: 'SITE_AUTH_FAILED' } });
    const t = await connected();
    expect(await send(t, MAX_HTTP_BUFFER_SIZE + 1024)).toBe('disconnected: transport close');
  });

  it('drops an authenticated agent as soon as an admin revokes its site over REST', async () => {
    const { socket, challenge } = await challenged();
    const ok = new Promise<void>((resolve) => socket.once('auth:ok', () => resolve()));
    socket.emit('auth:response', {
      signature: signBytes(authChallengeBytes(challenge.nonce, siteId), party.signing.secretKey),
    });
    await ok;
    const dropped = new Promise<string>((resolve) => socket.once('disconnect', resolve));
    const admin = (await c.app.get(AdminTokenService).create('root', 'admin')).token;
    const res = await fetch(`${c.url}/api/v1/sites/${siteId}/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'test' }),
    });
    expect(res.status).toBe(200);
    expect(await dropped).toBe('io server disconnect');
    const sites = (await (
      await fetch(`${c.url}/api/v1/sites`, { headers: { authorization: `Bearer ${admin}` } })
    ).json()) as {
      id: string;
      status: string;
      online: boolean;
    }[];
    expect(sites.find((x) => x.id === siteId)).toMatchObject({ status: 'revoked', online: false });
  });
});
