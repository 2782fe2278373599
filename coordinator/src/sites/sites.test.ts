import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { generatePartyKeys, toBase64 } from '@fedssl/shared/crypto';
import { PROTOCOL_VERSION } from '@fedssl/shared/protocol';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { hashSecretToken } from '../keys/secret-token';
import { AuditLog } from '../audit/audit-log';
import { SqliteStore } from '../store/sqlite-store';
import { codeOf } from '../testing/errors';
import { enrollRequest as request } from '../testing/enrollment';
import { EnrollmentService } from './enrollment.service';
import { PresenceService } from './presence.service';
import { SiteRegistryService } from './site-registry.service';
import { SiteRepository } from './site.repository';

const silent = pino({ level: 'silent' });

describe('sites', () => {
  let dir: string;
  let db: SqliteStore;
  let now: Date;
  let keys: CoordinatorKeysService;
  let repo: SiteRepository;
  let presence: PresenceService;
  let registry: SiteRegistryService;
  let enrollment: EnrollmentService;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-sites-'));
    db = SqliteStore.open(join(dir, 'fedssl.sqlite'));
    now = new Date('2025-01-01T00:00:00.000Z');
    const clock = { now: () => now.getTime() };
    keys = new CoordinatorKeysService(loadConfig({ FEDSSL_DATA_DIR: dir }), silent);
    repo = await new SiteRepository(db).init();
    const audit = await new AuditLog(db, clock).init();
    presence = new PresenceService();
    registry = new SiteRegistryService(repo, presence, db, audit, clock, silent);
    enrollment = new EnrollmentService(repo, keys, db, audit, clock, silent);
  });
  afterEach(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('issues a token for a pending site and stores only its hash', async () => {
    const issued = await enrollment.issueToken('St Elsewhere', 3600);
    expect(issued.token).toMatch(/^fse_[A-Za-z0-9_-]{43}$/);
    expect(issued.expiresAt).toBe('2025-01-01T01:00:00.000Z');
    const site = await registry.get(issued.siteId);
    expect(site).toMatchObject({
      name: 'St Elsewhere',
      status: 'pending',
      signingPublicKey: '',
      enrolledAt: null,
    });
    const stored = JSON.stringify(db.sqlite.prepare('SELECT * FROM enrollment_tokens').all());
    expect(stored).not.toContain(issued.token);
    expect(stored).toContain(hashSecretToken(issued.token));
    expect(await codeOf(() => enrollment.issueToken('St Elsewhere', 60))).toBe('SITE_NAME_TAKEN');
  });

  it('enrolls once with a valid token and returns the coordinator keys', async () => {
    const issued = await enrollment.issueToken('A', 3600);
    const party = generatePartyKeys();
    const res = await enrollment.enroll(request(issued.token, party));
    expect(res).toEqual({
      siteId: issued.siteId,
      siteName: 'A',
      coordinator: keys.publicKeys(),
      protocolVersion: PROTOCOL_VERSION,
    });
    expect(await registry.get(issued.siteId)).toMatchObject({
      status: 'enrolled',
      signingPublicKey: toBase64(party.signing.publicKey),
      boxPublicKey: toBase64(party.box.publicKey),
      enrolledAt: '2025-01-01T00:00:00.000Z',
      agentVersion: '0.1.0',
    });
    // Single use, even with the same keys.
    expect(await codeOf(() => enrollment.enroll(request(issued.token, party)))).toBe('ENROLLMENT_TOKEN_USED');
  });

  it('rejects unknown tokens', async () => {
    expect(await codeOf(() => enrollment.enroll(request('fse_' + 'x'.repeat(43))))).toBe(
      'ENROLLMENT_TOKEN_INVALID',
    );
  });

  it('rejects an expired token (injected clock) and consumes nothing', async () => {
    const issued = await enrollment.issueToken('B', 60);
    now = new Date('2025-01-01T00:01:00.000Z'); // exactly at expiry: expired
    expect(await codeOf(() => enrollment.enroll(request(issued.token)))).toBe('ENROLLMENT_TOKEN_EXPIRED');
    now = new Date('2025-01-01T00:00:59.999Z');
    expect((await enrollment.enroll(request(issued.token))).siteId).toBe(issued.siteId);
  });

  it('refuses enrollment for a revoked site', async () => {
    const issued = await enrollment.issueToken('C', 3600);
    await registry.revoke(issued.siteId, 'decommissioned');
    expect(await codeOf(() => enrollment.enroll(request(issued.token)))).toBe('SITE_REVOKED');
    expect((await repo.getToken(hashSecretToken(issued.token)))?.usedAt).toBeNull();
  });

  it('rejects bad keys without consuming the token', async () => {
    const issued = await enrollment.issueToken('D', 3600);
    const good = request(issued.token);
    const short = { ...good, signingPublicKey: toBase64(new Uint8Array(31)) };
    expect(await codeOf(() => enrollment.enroll(short))).toBe('PROTOCOL_INVALID_MESSAGE');
    await expect(enrollment.enroll(short)).rejects.toThrow('signingPublicKey: expected base64 of 32 bytes');
    expect(await codeOf(() => enrollment.enroll({ ...good, signingPublicKey: 'not base64!' }))).toBe(
      'PROTOCOL_INVALID_MESSAGE',
    );
    expect(await codeOf(() => enrollment.enroll({ ...good, boxPublicKey: good.signingPublicKey }))).toBe(
      'CRYPTO_INVALID_ARGUMENT',
    );
    expect(await codeOf(() => enrollment.enroll({ ...good, protocolVersion: 99 }))).toBe(
      'PROTOCOL_VERSION_MISMATCH',
    );
    // Still redeemable after all those failures.
    expect((await enrollment.enroll(good)).siteId).toBe(issued.siteId);
  });

  it('refuses a signing key already registered to another site', async () => {
    const party = generatePartyKeys();
    await enrollment.enroll(request((await enrollment.issueToken('E', 3600)).token, party));
    const second = await enrollment.issueToken('F', 3600);
    expect(await codeOf(() => enrollment.enroll(request(second.token, party)))).toBe('ENROLLMENT_KEY_IN_USE');
    expect((await registry.get(second.siteId))?.status).toBe('pending');
  });

  it('records agent status and revocation, announcing revocation to presence listeners', async () => {
    const issued = await enrollment.issueToken('G', 3600);
    await enrollment.enroll(request(issued.token));
    now = new Date('2025-01-02T00:00:00.000Z');
    await registry.recordStatus(issued.siteId, {
      state: 'idle',
      backend: 'wasm',
      exampleCount: 120,
      agentVersion: '0.1.1',
    });
    expect(await registry.get(issued.siteId)).toMatchObject({
      lastSeenAt: '2025-01-02T00:00:00.000Z',
      backend: 'wasm',
      exampleCount: 120,
      agentVersion: '0.1.1',
    });
    const revoked: string[] = [];
    presence.on('revoked', (id: string) => revoked.push(id));
    const site = await registry.revoke(issued.siteId, 'key leaked');
    expect(site).toMatchObject({ status: 'revoked', revokedAt: '2025-01-02T00:00:00.000Z' });
    expect(revoked).toEqual([issued.siteId]);
    now = new Date('2025-01-03T00:00:00.000Z');
    expect((await registry.revoke(issued.siteId, 'again')).revokedAt).toBe('2025-01-02T00:00:00.000Z');
    expect(await codeOf(() => registry.revoke('site-missing', 'x'))).toBe('SITE_NOT_FOUND');
  });
});

describe('PresenceService', () => {
  it('tracks connections per site and emits online/offline on the edges only', async () => {
    const p = new PresenceService();
    const events: string[] = [];
    p.on('online', (id: string) => events.push(`online:${id}`));
    p.on('offline', (id: string) => events.push(`offline:${id}`));
    p.markOnline('site-b', 'c1');
    p.markOnline('site-a', 'c2');
    p.markOnline('site-b', 'c3'); // reconnect while the old socket lingers
    expect(p.onlineSiteIds()).toEqual(['site-a', 'site-b']);
    p.markOffline('site-b', 'c1');
    expect(p.isOnline('site-b')).toBe(true);
    p.markOffline('site-b', 'unknown');
    p.markOffline('site-b', 'c3');
    expect(p.isOnline('site-b')).toBe(false);
    expect(p.onlineSiteIds()).toEqual(['site-a']);
    expect(events).toEqual(['online:site-b', 'online:site-a', 'offline:site-b']);
  });
});
