import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AdminTokenService } from '../admin/admin-token.service';
import { startCoordinator, type RunningCoordinator } from '../main';
import { testRunBody } from './federation.fixture';

describe('RunsController over HTTP (whole coordinator on port 0)', () => {
  let c: RunningCoordinator;
  let dataDir: string;
  let operator: string;
  let viewer: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'fedssl-runs-http-'));
    c = await startCoordinator(
      { host: '127.0.0.1', port: 0, dataDir, databaseUrl: null, logLevel: 'silent' },
      pino({ level: 'silent' }),
    );
    operator = (await c.app.get(AdminTokenService).create('op', 'operator')).token;
    viewer = (await c.app.get(AdminTokenService).create('view', 'viewer')).token;
  });
  afterAll(async () => {
    await c.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function call(method: string, path: string, token: string, body?: unknown) {
    const res = await fetch(`${c.url}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it('creates, starts and reads a run; invalid bodies get exact messages', async () => {
    const bad = await call('POST', '/runs', operator, { ...testRunBody(), minSites: 0, seed: -1 });
    expect(bad).toEqual({
      status: 400,
      body: {
        error: {
          code: 'RUN_CONFIG_INVALID',
          message:
            'minSites: Too small: expected number to be >=1; seed: Too small: expected number to be >=0',
        },
      },
    });
    expect((await call('POST', '/runs', viewer, testRunBody())).status).toBe(403);

    const created = await call('POST', '/runs', operator, testRunBody({ minSites: 1, rounds: 3 }));
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(created.body).toMatchObject({
      state: 'created',
      currentRound: 0,
      name: 'test run',
      initialModelVersion: null,
    });

    const started = await call('POST', `/runs/${id}/start`, operator);
    expect(started.status).toBe(200);
    expect(started.body).toMatchObject({
      state: 'running',
      currentRound: 1,
      initialModelVersion: `${id}.r0`,
      latestModelVersion: `${id}.r0`,
    });
    expect((await call('POST', `/runs/${id}/start`, operator)).status).toBe(409);

    const detail = await call('GET', `/runs/${id}`, viewer);
    expect(detail.status).toBe(200);
    // No site is online: round 1 waits, open, with no participants yet.
    expect(detail.body.rounds).toEqual([
      {
        round: 1,
        attempt: 1,
        state: 'open',
        startedAt: expect.any(String),
        deadline: null,
        publishedAt: null,
        modelVersion: null,
        modelSha256: null,
        reason: null,
        participants: [],
      },
    ]);
    const list = await call('GET', '/runs', viewer);
    expect((list.body as unknown as { id: string }[]).map((r) => r.id)).toEqual([id]);
    expect(await call('GET', '/runs/run-missing', viewer)).toEqual({
      status: 404,
      body: { error: { code: 'RUN_NOT_FOUND', message: 'run run-missing does not exist' } },
    });
    const models = await call('GET', `/models/${id}.r0`, viewer);
    expect(models.status).toBe(200);
  });
});
