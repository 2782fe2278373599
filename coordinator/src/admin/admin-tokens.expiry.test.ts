import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Writable } from 'node:stream';
import pino from 'pino';
import { FakeClock } from '../runs/clock';
import type { RestClient } from '../testing/rest-client';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';
import { AdminTokenService } from './admin-token.service';

/** Admin tokens with an expiry, over real HTTP, with the platform clock under the test's control. */
describe('admin tokens with expiry (REST)', () => {
  let c: TestCoordinator;
  let rest: RestClient;
  let admin: string;
  const clock = new FakeClock(Date.parse('2031-03-01T12:00:00Z'));
  const lines: { msg: string; code?: string; status?: number; path?: string }[] = [];

  const call = (method: string, path: string, token?: string, body?: unknown) =>
    rest.call(method, path, { token, body });

  beforeAll(async () => {
    const capture = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    c = await startTestCoordinator({
      prefix: 'fedssl-admin-expiry-',
      config: { logLevel: 'info' },
      logger: pino({ level: 'info' }, capture),
      core: { clock },
    });
    rest = c.rest();
    admin = (await c.app.get(AdminTokenService).create('root', 'admin')).token;
  });
  afterAll(async () => {
    await c?.close();
  });

  it('creates a token valid for a duration, lists its expiry, and refuses it with a coded 401 after', async () => {
    const created = await call('POST', '/admin-tokens', admin, {
      name: 'ci',
      role: 'viewer',
      expiresInSeconds: 3600,
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'ci', role: 'viewer', expiresAt: '2031-03-01T13:00:00.000Z' });
    const listed = (await call('GET', '/admin-tokens', admin)).body as {
      id: string;
      expiresAt: string | null;
    }[];
    expect(listed.find((t) => t.id === created.body.id)?.expiresAt).toBe('2031-03-01T13:00:00.000Z');
    expect(listed.find((t) => t.id !== created.body.id)?.expiresAt).toBeNull();

    clock.advance(3599_000);
    expect((await call('GET', '/sites', created.body.token)).status).toBe(200);
    clock.advance(1000);
    const mark = lines.length;
    const refused = await call('GET', '/sites', created.body.token);
    expect(refused).toEqual({
      status: 401,
      body: {
        error: {
          code: 'ADMIN_TOKEN_EXPIRED',
          message: `admin token ${created.body.id} expired at 2031-03-01T13:00:00.000Z; ask an admin for a new one`,
        },
      },
    });
    expect(lines.slice(mark)).toContainEqual(
      expect.objectContaining({
        msg: 'request refused',
        code: 'ADMIN_TOKEN_EXPIRED',
        status: 401,
        path: '/api/v1/sites',
      }),
    );
    // The token that never expires still works.
    expect((await call('GET', '/sites', admin)).status).toBe(200);
  });

  it('creates a token valid until an instant; refuses a past instant and both forms at once', async () => {
    const at = new Date(clock.now() + 120_000).toISOString();
    const created = await call('POST', '/admin-tokens', admin, {
      name: 'deploy',
      role: 'operator',
      expiresAt: at,
    });
    expect(created.status).toBe(201);
    expect(created.body.expiresAt).toBe(at);
    expect((await call('GET', '/runs', created.body.token)).status).toBe(200);
    clock.advance(120_000);
    expect((await call('GET', '/runs', created.body.token)).body.error.code).toBe('ADMIN_TOKEN_EXPIRED');

    expect(
      await call('POST', '/admin-tokens', admin, {
        name: 'x',
        role: 'viewer',
        expiresAt: new Date(clock.now() - 1000).toISOString(),
      }),
    ).toEqual({
      status: 400,
      body: {
        error: {
          code: 'PROTOCOL_INVALID_MESSAGE',
          message: `expiresAt ${new Date(clock.now() - 1000).toISOString()} is not in the future`,
        },
      },
    });
    expect(
      (
        await call('POST', '/admin-tokens', admin, {
          name: 'x',
          role: 'viewer',
          expiresAt: at,
          expiresInSeconds: 60,
        })
      ).body,
    ).toEqual({
      error: {
        code: 'PROTOCOL_INVALID_MESSAGE',
        message: '(root): give expiresInSeconds or expiresAt, not both',
      },
    });
    expect(
      (await call('POST', '/admin-tokens', admin, { name: 'x', role: 'viewer', expiresInSeconds: 5 })).body,
    ).toEqual({
      error: {
        code: 'PROTOCOL_INVALID_MESSAGE',
        message: 'expiresInSeconds: Too small: expected number to be >=60',
      },
    });
  });

  it('a revoked token is refused as unauthorized even before it expires', async () => {
    const created = await call('POST', '/admin-tokens', admin, {
      name: 'tmp',
      role: 'viewer',
      expiresInSeconds: 600,
    });
    await call('POST', `/admin-tokens/${created.body.id}/revoke`, admin);
    expect((await call('GET', '/sites', created.body.token)).body.error.code).toBe('ADMIN_UNAUTHORIZED');
  });
});
