import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { RestClient } from '../testing/rest-client';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';
import { testRunBody } from './federation.fixture';

describe('RunsController over HTTP (whole coordinator on port 0)', () => {
  let c: TestCoordinator;
  let rest: RestClient;
  let operator: string;
  let viewer: string;

  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-runs-http-' });
    rest = c.rest();
    operator = await c.token('operator', 'op');
    viewer = await c.token('viewer', 'view');
  });
  afterAll(async () => {
    await c.close();
  });

  const call = (method: string, path: string, token: string, body?: unknown) =>
    rest.call(method, path, { token, body });

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

  it("validates training.siteOptimizerState: 'keep' is stored for the tasks, anything else refused", async () => {
    const body = (mode: string) =>
      testRunBody({ training: { ...testRunBody().training, siteOptimizerState: mode as 'keep' } });
    expect(await call('POST', '/runs', operator, body('sometimes'))).toEqual({
      status: 400,
      body: {
        error: {
          code: 'RUN_CONFIG_INVALID',
          message: 'training.siteOptimizerState: Invalid option: expected one of "reset"|"keep"',
        },
      },
    });
    const created = await call('POST', '/runs', operator, body('keep'));
    expect(created.status).toBe(201);
    const detail = await call('GET', `/runs/${created.body.id as string}`, viewer);
    expect(
      (detail.body.config as { training: { siteOptimizerState?: string } }).training.siteOptimizerState,
    ).toBe('keep');
  });
});
