import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { AdminTokenService } from '../admin/admin-token.service';
import { testRunBody } from '../runs/federation.fixture';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import type { RestClient } from '../testing/rest-client';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

describe('run control and the audit log over HTTP (whole coordinator on port 0)', () => {
  let c: TestCoordinator;
  let rest: RestClient;
  let admin: string;
  let adminId: string;
  let operator: string;
  let operatorId: string;
  let viewer: string;

  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-audit-http-' });
    rest = c.rest();
    const tokens = c.app.get(AdminTokenService);
    ({ token: admin, id: adminId } = await tokens.create('root', 'admin'));
    ({ token: operator, id: operatorId } = await tokens.create('op', 'operator'));
    viewer = (await tokens.create('view', 'viewer')).token;
  });
  afterAll(async () => {
    await c.close();
  });

  const call = (method: string, path: string, token: string, body?: unknown) =>
    rest.call(method, path, { token, body });

  it('pauses, resumes and cancels a run with persisted states and exact 409s, each audited', async () => {
    const id = (await call('POST', '/runs', operator, testRunBody({ minSites: 1 }))).body.id as string;
    expect(await call('POST', `/runs/${id}/pause`, operator)).toEqual({
      status: 409,
      body: {
        error: {
          code: 'RUN_INVALID_STATE',
          message: `run ${id} is created; only a running run can be paused`,
        },
      },
    });
    expect((await call('POST', `/runs/${id}/start`, operator)).body.state).toBe('running');
    expect((await call('POST', `/runs/${id}/pause`, viewer)).status).toBe(403);
    expect((await call('POST', `/runs/${id}/pause`, operator)).body.state).toBe('paused');
    expect((await call('GET', `/runs/${id}`, viewer)).body.state).toBe('paused');
    expect(await call('POST', `/runs/${id}/start`, operator)).toEqual({
      status: 409,
      body: {
        error: {
          code: 'RUN_INVALID_STATE',
          message: `run ${id} is paused; resume it instead of starting it`,
        },
      },
    });
    expect((await call('POST', `/runs/${id}/pause`, operator)).body).toEqual({
      error: { code: 'RUN_INVALID_STATE', message: `run ${id} is paused; only a running run can be paused` },
    });
    expect((await call('POST', `/runs/${id}/resume`, operator)).body.state).toBe('running');
    expect((await call('POST', `/runs/${id}/resume`, operator)).body).toEqual({
      error: { code: 'RUN_INVALID_STATE', message: `run ${id} is running; only a paused run can be resumed` },
    });
    const cancelled = await call('POST', `/runs/${id}/cancel`, operator);
    expect(cancelled.body).toMatchObject({ state: 'cancelled', reason: 'cancelled by an operator' });
    const detail = await call('GET', `/runs/${id}`, viewer);
    // No agent is online, so round 1 was open (waiting for sites) and fails with the run.
    expect(detail.body.rounds).toMatchObject([
      { round: 1, attempt: 1, state: 'failed', reason: 'run cancelled' },
    ]);
    expect((await call('POST', `/runs/${id}/cancel`, operator)).body).toEqual({
      error: {
        code: 'RUN_INVALID_STATE',
        message: `run ${id} is cancelled; only a created, running or paused run can be cancelled`,
      },
    });
    expect((await call('POST', '/runs/run-nope/pause', operator)).body).toEqual({
      error: { code: 'RUN_NOT_FOUND', message: 'run run-nope does not exist' },
    });

    const log = await call('GET', '/audit?limit=1000', viewer);
    const entries = log.body.entries as { seq: number; actor: string; action: string; target: string }[];
    expect(entries.filter((e) => e.target === id).map((e) => [e.actor, e.action])).toEqual([
      [`admin:${operatorId}`, 'run.created'],
      [`admin:${operatorId}`, 'run.started'],
      [`admin:${operatorId}`, 'run.paused'],
      [`admin:${operatorId}`, 'run.resumed'],
      [`admin:${operatorId}`, 'run.cancelled'],
    ]);
    expect(entries.slice(0, 3).map((e) => [e.seq, e.actor, e.action])).toEqual([
      [1, 'system', 'admin-token.created'],
      [2, 'system', 'admin-token.created'],
      [3, 'system', 'admin-token.created'],
    ]);
    expect(log.body.nextAfter).toBeNull();
  });

  it('audits admin actions with the caller, pages, verifies, and finds a tampered row', async () => {
    const issued = await call('POST', '/enrollment-tokens', admin, { siteName: 'St Audit' });
    expect(issued.status).toBe(201);
    await call('POST', `/sites/${issued.body.siteId as string}/revoke`, admin, { reason: 'test' });
    const all = (await call('GET', '/audit?limit=1000', viewer)).body.entries as {
      seq: number;
      actor: string;
      action: string;
      details: unknown;
    }[];
    expect(all.slice(-2).map((e) => [e.actor, e.action, e.details])).toEqual([
      [
        `admin:${adminId}`,
        'enrollment-token.created',
        { siteName: 'St Audit', expiresAt: expect.any(String) },
      ],
      [`admin:${adminId}`, 'site.revoked', { reason: 'test' }],
    ]);
    const page = await call('GET', '/audit?after=2&limit=2', viewer);
    expect((page.body.entries as { seq: number }[]).map((e) => e.seq)).toEqual([3, 4]);
    expect(page.body.nextAfter).toBe(4);
    expect(await call('GET', '/audit?limit=0', viewer)).toEqual({
      status: 400,
      body: { error: { code: 'PROTOCOL_INVALID_MESSAGE', message: 'limit: expected an integer 1–1000' } },
    });
    expect(await call('GET', '/audit/verify', viewer)).toEqual({
      status: 200,
      body: { ok: true, entries: all.length },
    });
    await c.app
      .get<symbol, SqlStore>(SQL_STORE)
      .execute("UPDATE audit_log SET actor = 'system' WHERE seq = $1", [5]);
    expect((await call('GET', '/audit/verify', viewer)).body).toEqual({
      ok: false,
      entries: 4,
      firstBadSeq: 5,
      reason: 'entry 5 does not match its hash',
    });
  });
});
