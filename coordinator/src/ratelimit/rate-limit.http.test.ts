import { Writable } from 'node:stream';
import pino from 'pino';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_NAMESPACE, PROTOCOL_VERSION } from '@fedssl/shared/protocol';
import { CONSOLE_NAMESPACE } from '../console/console.gateway';
import { enrollRequest } from '../testing/enrollment';
import type { RestClient } from '../testing/rest-client';
import { SocketAgents } from '../testing/socket-agents';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

/**
 * The per-address limits of the unauthenticated entry points, through a whole coordinator:
 * REST (enroll, admin bearer tokens), the agents' and the console's socket.io namespaces.
 * Limits of 2 a minute, a clock the test moves, one proxy hop trusted so that each case can
 * be its own client through `X-Forwarded-For` (the TCP peer is always 127.0.0.1 here).
 */
describe('rate limits of unauthenticated entry points', () => {
  let c: TestCoordinator;
  let admin: RestClient;
  let agents: SocketAgents;
  const clock = { t: Date.parse('2026-01-01T00:00:00Z'), now: () => clock.t };
  const logs: Record<string, unknown>[] = [];
  const sockets: Socket[] = [];

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) logs.push(JSON.parse(l));
        done();
      },
    });
    const limit = { count: 2, perSeconds: 60 };
    c = await startTestCoordinator({
      prefix: 'fedssl-ratelimit-',
      config: {
        rateLimits: { enroll: limit, adminAuth: limit, agentConnect: limit },
        trustProxyHops: 1,
      },
      logger: pino({ level: 'warn' }, sink),
      core: { clock },
    });
    admin = c.rest(await c.token('admin'));
    agents = new SocketAgents(c.url, admin);
  });
  afterAll(async () => {
    for (const s of sockets) s.close();
    agents?.closeAll();
    await c?.close();
  });

  const from = (address: string) => ({ 'x-forwarded-for': address });
  const limitLogs = () => logs.filter((l) => l['msg'] === 'rate limit reached');

  it('answers the third failed enrollment from one address with 429, Retry-After and the limit named; logs it once', async () => {
    const guess = enrollRequest(`fse_${'A'.repeat(43)}`);
    for (let i = 0; i < 2; i++) {
      const r = await c.rest().call('POST', '/enroll', { body: guess, headers: from('198.51.100.1') });
      expect(r.status).toBe(400);
    }
    for (let i = 0; i < 3; i++) {
      const r = await c.rest().response('POST', '/enroll', { body: guess, headers: from('198.51.100.1') });
      expect(r.status).toBe(429);
      expect(r.headers.get('retry-after')).toBe('30');
      expect(r.body).toEqual({
        error: {
          code: 'RATE_LIMITED',
          message:
            'too many failed enrollment attempts from this address (limit enroll: 2 per 60 s); retry in 30 s',
          details: { limit: 'enroll', retryAfterSeconds: 30 },
        },
      });
    }
    // One line for the limited client: its address and the class, no token, no site.
    expect(limitLogs()).toEqual([
      expect.objectContaining({
        level: 40,
        context: 'RateLimit',
        address: '198.51.100.1',
        limit: 'enroll',
        retryAfterSeconds: 30,
      }),
    ]);
    expect(JSON.stringify(logs)).not.toContain('AAAAAAAA');
    // Another address is not limited; this one is again once a token has refilled.
    expect(
      (await c.rest().call('POST', '/enroll', { body: guess, headers: from('198.51.100.2') })).status,
    ).toBe(400);
    clock.t += 30_000;
    expect(
      (await c.rest().call('POST', '/enroll', { body: guess, headers: from('198.51.100.1') })).status,
    ).toBe(400);
  });

  it('does not count successful enrollments or valid admin tokens', async () => {
    for (let i = 0; i < 4; i++) {
      const issued = await admin.ok('POST', '/enrollment-tokens', { siteName: `limits-${i}` });
      const r = await c.rest().call('POST', '/enroll', {
        body: enrollRequest(issued.token as string),
        headers: from('198.51.100.3'),
      });
      expect(r.status).toBe(200);
    }
    for (let i = 0; i < 5; i++) {
      const r = await admin.call('GET', '/sites', { headers: from('198.51.100.3') });
      expect(r.status).toBe(200);
    }
  });

  it('limits failed admin tokens per address; a request without a token is not counted', async () => {
    const bad = `fsa_${'B'.repeat(43)}`;
    for (let i = 0; i < 4; i++)
      expect((await c.rest().call('GET', '/sites', { headers: from('198.51.100.4') })).status).toBe(401);
    for (let i = 0; i < 2; i++)
      expect((await c.rest(bad).call('GET', '/sites', { headers: from('198.51.100.4') })).status).toBe(401);
    const limited = await c.rest(bad).response('GET', '/sites', { headers: from('198.51.100.4') });
    expect([limited.status, limited.headers.get('retry-after'), limited.body]).toEqual([
      429,
      '30',
      {
        error: {
          code: 'RATE_LIMITED',
          message:
            'too many failed admin authentications from this address (limit admin-auth: 2 per 60 s); retry in 30 s',
          details: { limit: 'admin-auth', retryAfterSeconds: 30 },
        },
      },
    ]);
    // Until a token refills, the address is refused even with a valid token (it is not looked at).
    expect((await admin.call('GET', '/sites', { headers: from('198.51.100.4') })).status).toBe(429);
    // The console's socket shares the admin-auth limit of its address.
    const s = io(`${c.url}${CONSOLE_NAMESPACE}`, {
      auth: { token: bad },
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      extraHeaders: from('198.51.100.4'),
    });
    sockets.push(s);
    const err = await new Promise<Error & { data?: unknown }>((resolve) => s.once('connect_error', resolve));
    expect([err.message, err.data]).toEqual([
      'too many failed admin authentications from this address (limit admin-auth: 2 per 60 s); retry in 30 s',
      { code: 'RATE_LIMITED', limit: 'admin-auth', retryAfterSeconds: 30 },
    ]);
    // So does /metrics, which checks its bearer token outside the REST guard.
    const scrape = await fetch(`${c.url}/metrics`, {
      headers: { authorization: `Bearer ${bad}`, ...from('198.51.100.4') },
    });
    expect([
      scrape.status,
      scrape.headers.get('retry-after'),
      ((await scrape.json()) as { error: { code: string } }).error.code,
    ]).toEqual([429, '30', 'RATE_LIMITED']);
  });

  it('refuses an agent connection over the limit with a coded error before any challenge; an authenticated one gives its attempt back', async () => {
    const connect = (siteId: string) => {
      const s = io(`${c.url}${AGENT_NAMESPACE}`, {
        auth: { siteId, protocolVersion: PROTOCOL_VERSION, agentVersion: 't' },
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        extraHeaders: from('198.51.100.5'),
      });
      sockets.push(s);
      return new Promise<{ code: string; message: string } | 'challenged'>((resolve) => {
        s.once('error', resolve);
        s.once('auth:challenge', () => resolve('challenged'));
      });
    };
    for (let i = 0; i < 2; i++)
      expect(await connect('site-nobody')).toMatchObject({ code: 'SITE_NOT_FOUND' });
    expect(await connect('site-nobody')).toEqual({
      code: 'RATE_LIMITED',
      message:
        'too many agent connections that did not authenticate from this address (limit agent-connect: 2 per 60 s); retry in 30 s',
    });
    expect(limitLogs().at(-1)).toMatchObject({ address: '198.51.100.5', limit: 'agent-connect' });

    // An honest agent (from 127.0.0.1, no X-Forwarded-For) reconnects as often as it needs to.
    const site = await agents.enroll('limits-agent');
    site.socket.disconnect();
    for (let i = 0; i < 4; i++) {
      const s = agents.connect(site.siteId, site.keys);
      await new Promise((resolve) => s.once('auth:ok', resolve));
      s.disconnect();
    }
  });

  it('counts every refused attempt in /metrics by class', async () => {
    // The cases above, in order: 3 enrollments; REST, REST with a valid token, console,
    // /metrics (admin-auth); 1 agent connection.
    const res = await fetch(`${c.url}/metrics`, {
      headers: { authorization: `Bearer ${await c.token('viewer')}` },
    });
    const text = await res.text();
    const count = (limit: string) =>
      Number(new RegExp(`^fedssl_rate_limited_total\\{limit="${limit}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    expect([count('enroll'), count('admin-auth'), count('agent-connect')]).toEqual([3, 4, 1]);
  });

  it('trusts X-Forwarded-For only as far as the configured proxy hops', async () => {
    // One hop trusted: the right-most entry is the client, whatever the client wrote before it.
    const bad = c.rest(`fsa_${'C'.repeat(43)}`);
    for (let i = 0; i < 2; i++)
      await bad.call('GET', '/sites', { headers: from(`forged-${i}, 198.51.100.6`) });
    expect((await bad.call('GET', '/sites', { headers: from('forged-9, 198.51.100.6') })).status).toBe(429);
  });
});
