import { it, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startCoordinator } from '../main';
import { AdminTokenService } from '../admin/admin-token.service';
import { RunService } from '../runs/run.service';
import { testRunBody } from '../runs/federation.fixture';
import { PostgresStore } from './postgres-store';

/** The real PostgreSQL CI starts (trust auth); override with FEDSSL_TEST_DATABASE_URL. */
const URL = process.env['FEDSSL_TEST_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';
it('the whole coordinator runs on PostgreSQL (FEDSSL_DATABASE_URL with ?schema=): REST, run start, audit verify', async () => {
  const schema = 'smoke_' + Date.now();
  const c = await startCoordinator(
    {
      host: '127.0.0.1',
      port: 0,
      dataDir: mkdtempSync(join(tmpdir(), 'pg-')),
      databaseUrl: `${URL}?schema=${schema}`,
      logLevel: 'silent',
    },
    pino({ level: 'silent' }),
  );
  const t = await c.app.get(AdminTokenService).create('x', 'operator');
  const run = await c.app.get(RunService).create(testRunBody({ minSites: 1 }));
  const res = await fetch(`${c.url}/api/v1/runs/${run.id}/start`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.token}` },
  });
  expect(((await res.json()) as { state: string }).state).toBe('running');
  const v = await fetch(`${c.url}/api/v1/audit/verify`, { headers: { authorization: `Bearer ${t.token}` } });
  expect(await v.json()).toEqual({ ok: true, entries: 3 });
  await c.close();
  const s = await PostgresStore.open({ url: URL, schema });
  await s.dropSchema();
  await s.close();
});
