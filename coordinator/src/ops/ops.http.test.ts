import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AdminTokenService } from '../admin/admin-token.service';
import { loadConfig } from '../config/config';
import { startCoordinator, type RunningCoordinator } from '../main';
import { SQL_STORE, type SqlStore } from '../store/sql-store';

describe('operations endpoints (real HTTP server)', () => {
  let dir: string;
  let running: RunningCoordinator;
  const tokens = { viewer: '', admin: '' };

  const get = async (path: string, token?: string) => {
    const res = await fetch(`${running.url}${path}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    return { status: res.status, text: await res.text(), type: res.headers.get('content-type') ?? '' };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-ops-'));
    const config = loadConfig({ FEDSSL_DATA_DIR: dir, FEDSSL_PORT: '0', FEDSSL_HOST: '127.0.0.1' });
    running = await startCoordinator(config, pino({ level: 'silent' }));
    const admins = running.app.get(AdminTokenService);
    tokens.viewer = (await admins.create('scraper', 'viewer')).token;
    tokens.admin = (await admins.create('root', 'admin')).token;
  });
  afterAll(async () => {
    await running?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}.moved`, { recursive: true, force: true });
  });

  it('/healthz at the root and under /api/v1 answer 200 without a token', async () => {
    expect(await get('/healthz')).toMatchObject({ status: 200, text: '{"status":"ok"}' });
    expect(await get('/api/v1/healthz')).toMatchObject({ status: 200, text: '{"status":"ok"}' });
  });

  it('/readyz is 200 with every check ok', async () => {
    const r = await get('/readyz');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({
      status: 'ready',
      checks: { store: { ok: true }, dataDir: { ok: true }, keys: { ok: true } },
    });
  });

  it('/metrics needs a viewer token and exposes the fedssl series', async () => {
    const anon = await get('/metrics');
    expect(anon.status).toBe(401);
    expect(JSON.parse(anon.text)).toEqual({
      error: {
        code: 'ADMIN_UNAUTHORIZED',
        message: 'missing bearer token: send "Authorization: Bearer <admin token>"',
      },
    });
    expect((await get('/metrics', 'not-a-token')).status).toBe(401);
    for (const t of [tokens.viewer, tokens.admin]) {
      const r = await get('/metrics', t);
      expect(r.status).toBe(200);
      expect(r.type).toContain('text/plain');
      expect(r.text).toContain('fedssl_sites_online 0');
      expect(r.text).toContain('fedssl_rounds_total{state="published"} 0');
      expect(r.text).toContain('fedssl_updates_accepted_total 0');
      expect(r.text).toContain('# TYPE fedssl_aggregation_seconds histogram');
      expect(r.text).toContain('fedssl_process_resident_memory_bytes');
    }
  });

  it('/api/docs/openapi.json lists the REST paths with bearer security, public ones without', async () => {
    const r = await get('/api/docs/openapi.json');
    expect(r.status).toBe(200);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking a JSON document
    const doc = JSON.parse(r.text) as any;
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.paths['/api/v1/runs'].get.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/api/v1/runs'].post.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/api/v1/runs'].get.tags).toEqual(['runs']);
    expect(doc.paths['/api/v1/enrollment-tokens'].post.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/api/v1/healthz'].get.security).toEqual([]);
    expect(doc.paths['/metrics'].get.security).toEqual([{ bearer: [] }]);
    const ui = await get('/api/docs');
    expect(ui.status).toBe(200);
    expect(ui.text).toContain('swagger');
  });

  it('documents the TF.js inputSize query parameter and the run body training and strategy options', async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking a JSON document
    const doc = JSON.parse((await get('/api/docs/openapi.json')).text) as any;
    const download = doc.paths['/api/v1/models/{version}/download/{format}'].get;
    const inputSize = download.parameters.filter((p: { name: string }) => p.name === 'inputSize');
    expect(inputSize).toEqual([
      {
        name: 'inputSize',
        in: 'query',
        required: false,
        schema: { type: 'integer', minimum: 16, maximum: 512 },
        description: expect.stringMatching(/^tfjs only \(refused for other formats\): /),
      },
    ]);
    expect(download.parameters.find((p: { name: string }) => p.name === 'format').schema.enum).toEqual([
      'tfjs',
      'safetensors',
      'card',
    ]);

    const body = doc.paths['/api/v1/runs'].post.requestBody.content['application/json'].schema;
    const training = body.properties.training.properties;
    expect(training.siteOptimizerState).toEqual({
      type: 'string',
      enum: ['reset', 'keep'],
      description: expect.stringContaining('reset (fresh moments; also when absent)'),
    });
    expect(training.localUpdate).toMatchObject({ enum: ['replace', 'fedema'], default: 'replace' });
    expect(training.fedemaScaler).toMatchObject({ type: 'number', default: 1, minimum: 0 });
    expect(training.updateEncoding).toMatchObject({
      enum: ['float32', 'float16', 'int8'],
      default: 'float32',
    });
    for (const field of ['siteOptimizerState', 'localUpdate', 'fedemaScaler', 'updateEncoding'])
      expect([field, typeof training[field].description]).toEqual([field, 'string']);
    expect(body.properties.model.properties.norm).toMatchObject({
      enum: ['batch', 'group'],
      default: 'group',
    });
    const variants = body.properties.strategy.anyOf[1].oneOf as {
      properties: Record<string, { const?: string; default?: number; description?: string }>;
    }[];
    const fedavgm = variants.find((v) => v.properties['name']!.const === 'fedavgm')!;
    expect(fedavgm.properties['serverMomentum']).toMatchObject({ default: 0.9, exclusiveMaximum: 1 });
    expect(fedavgm.properties['serverLearningRate']).toMatchObject({ default: 1 });
    const trimmed = variants.find((v) => v.properties['name']!.const === 'trimmed-mean')!;
    expect(trimmed.properties['beta']).toMatchObject({ default: 0.1, exclusiveMaximum: 0.5 });
    expect(typeof trimmed.properties['clipNorm']!.description).toBe('string');
  });

  it('/readyz is 503 naming the data dir when it is gone, then the store when it is closed', async () => {
    renameSync(dir, `${dir}.moved`);
    try {
      const r = await get('/readyz');
      expect(r.status).toBe(503);
      const body = JSON.parse(r.text);
      expect(body.status).toBe('not ready');
      expect(body.checks.dataDir).toEqual({ ok: false, error: 'data dir is not writable (ENOENT)' });
      expect(body.checks.store).toEqual({ ok: true });
    } finally {
      renameSync(`${dir}.moved`, dir);
    }
    expect((await get('/readyz')).status).toBe(200);
    await running.app.get<symbol, SqlStore>(SQL_STORE).close();
    const r = await get('/readyz');
    expect(r.status).toBe(503);
    const body = JSON.parse(r.text);
    expect(body.checks.store.ok).toBe(false);
    expect(body.checks.store.error).toMatch(/^store query failed: /);
    expect(body.checks.dataDir).toEqual({ ok: true });
  });
});
