import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../audit/audit-log';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { hashSecretToken } from '../keys/secret-token';
import { PostgresStore } from '../store/postgres-store';
import type { SqlStore } from '../store/sql-store';
import { SqliteStore } from '../store/sqlite-store';
import { codeOf } from '../testing/errors';
import { enrollRequest as request } from '../testing/enrollment';
import { EnrollmentService } from './enrollment.service';
import { PresenceService } from './presence.service';
import { SiteRegistryService } from './site-registry.service';
import { SiteRepository } from './site.repository';

const silent = pino({ level: 'silent' });
const PG_URL = process.env['FEDSSL_TEST_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';

const backends: [string, (dir: string) => Promise<SqlStore>, (s: SqlStore) => Promise<void>][] = [
  ['SQLite', async (dir) => SqliteStore.open(join(dir, 'fedssl.sqlite')), (s) => s.close()],
  [
    'PostgreSQL',
    async () => PostgresStore.open({ url: PG_URL, schema: `t_${randomBytes(6).toString('hex')}` }),
    async (s) => {
      await (s as PostgresStore).dropSchema();
      await s.close();
    },
  ],
];

describe.each(backends)('enrollment tokens: list and expire early (%s)', (_name, open, close) => {
  let dir: string;
  let db: SqlStore;
  let now: Date;
  let audit: AuditLog;
  let registry: SiteRegistryService;
  let enrollment: EnrollmentService;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-enroll-tokens-'));
    db = await open(dir);
    now = new Date('2025-01-01T00:00:00.000Z');
    const clock = { now: () => now.getTime() };
    const keys = new CoordinatorKeysService(loadConfig({ FEDSSL_DATA_DIR: dir }), silent);
    const repo = await new SiteRepository(db).init();
    audit = await new AuditLog(db, clock).init();
    registry = new SiteRegistryService(repo, new PresenceService(), db, audit, clock, silent);
    enrollment = new EnrollmentService(repo, keys, db, audit, clock, silent);
  });
  afterEach(async () => {
    await close(db);
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists every token newest first with its state, never the secret or its hash', async () => {
    const used = await enrollment.issueToken('Used', 3600);
    now = new Date('2025-01-01T00:01:00.000Z');
    const lapsed = await enrollment.issueToken('Lapsed', 60);
    now = new Date('2025-01-01T00:02:00.000Z');
    const revoked = await enrollment.issueToken('Revoked', 3600);
    now = new Date('2025-01-01T00:03:00.000Z');
    const pending = await enrollment.issueToken('Pending', 3600);
    await enrollment.enroll(request(used.token));
    await registry.revoke(revoked.siteId, 'closed', 'system');
    now = new Date('2025-01-01T00:05:00.000Z');

    const list = await enrollment.listTokens();
    expect(list.map((t) => [t.siteName, t.state])).toEqual([
      ['Pending', 'pending'],
      ['Revoked', 'revoked'],
      ['Lapsed', 'expired'],
      ['Used', 'used'],
    ]);
    expect(list[0]).toEqual({
      siteId: pending.siteId,
      siteName: 'Pending',
      createdAt: '2025-01-01T00:03:00.000Z',
      expiresAt: '2025-01-01T01:03:00.000Z',
      usedAt: null,
      state: 'pending',
    });
    expect(list[3]!.usedAt).toBe('2025-01-01T00:03:00.000Z');
    const text = JSON.stringify(list);
    for (const t of [used, lapsed, revoked, pending]) {
      expect(text).not.toContain(t.token);
      expect(text).not.toContain(hashSecretToken(t.token));
    }
  });

  it('expires a pending token now (audited); /enroll then refuses it as expired', async () => {
    const issued = await enrollment.issueToken('St Early', 3600);
    now = new Date('2025-01-01T00:10:00.000Z');
    const expired = await enrollment.expireToken(issued.siteId, 'admin:adm-1');
    expect(expired).toMatchObject({
      siteId: issued.siteId,
      state: 'expired',
      expiresAt: '2025-01-01T00:10:00.000Z',
    });
    const last = (await audit.list({ limit: 1000 })).at(-1)!;
    expect([last.actor, last.action, last.target, last.details]).toEqual([
      'admin:adm-1',
      'enrollment-token.expired',
      issued.siteId,
      { siteName: 'St Early' },
    ]);
    expect(await codeOf(() => enrollment.enroll(request(issued.token)))).toBe('ENROLLMENT_TOKEN_EXPIRED');
    expect((await registry.get(issued.siteId))?.status).toBe('pending');
  });

  it('refuses unknown sites (404 code) and tokens already used, expired or revoked (409 code)', async () => {
    expect(await codeOf(() => enrollment.expireToken('nope'))).toBe('ENROLLMENT_TOKEN_NOT_FOUND');

    const once = await enrollment.issueToken('Twice', 3600);
    await enrollment.expireToken(once.siteId);
    expect(await codeOf(() => enrollment.expireToken(once.siteId))).toBe('ENROLLMENT_TOKEN_NOT_PENDING');

    const used = await enrollment.issueToken('Used', 3600);
    await enrollment.enroll(request(used.token));
    expect(await codeOf(() => enrollment.expireToken(used.siteId))).toBe('ENROLLMENT_TOKEN_NOT_PENDING');

    const lapsed = await enrollment.issueToken('Lapsed', 60);
    now = new Date(now.getTime() + 61_000);
    expect(await codeOf(() => enrollment.expireToken(lapsed.siteId))).toBe('ENROLLMENT_TOKEN_NOT_PENDING');

    const revoked = await enrollment.issueToken('Revoked', 3600);
    await registry.revoke(revoked.siteId, 'closed', 'system');
    expect(await codeOf(() => enrollment.expireToken(revoked.siteId))).toBe('ENROLLMENT_TOKEN_NOT_PENDING');

    // None of the refusals changed anything or wrote an audit entry.
    const actions = (await audit.list({ limit: 1000 })).map((e) => e.action);
    expect(actions.filter((a) => a === 'enrollment-token.expired')).toHaveLength(1);
    expect((await enrollment.listTokens()).find((t) => t.siteId === used.siteId)?.state).toBe('used');
  });
});
