import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import {
  generatePartyKeys,
  keyId,
  signBytes,
  signSiteKeyRotation,
  toBase64,
  verifyBytes,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { AuditLog } from '../audit/audit-log';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { rememberingVerifier } from './site-keys';
import { PostgresStore } from '../store/postgres-store';
import type { SqlStore } from '../store/sql-store';
import { SqliteStore } from '../store/sqlite-store';
import { codeOf } from '../testing/errors';
import { enrollRequest } from '../testing/enrollment';
import { toSiteResponse } from './dtos/site.dto';
import { EnrollmentService } from './enrollment.service';
import { PresenceService } from './presence.service';
import { SiteRegistryService } from './site-registry.service';
import { SiteRepository } from './site.repository';

const silent = pino({ level: 'silent' });
const PG_URL = process.env['FEDSSL_TEST_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';

/** Registry + enrollment over one store, with a movable clock and a 1-hour grace period. */
async function platform(db: SqlStore, dir: string) {
  const clock = { t: Date.parse('2026-01-01T00:00:00.000Z'), now: () => clock.t };
  const config = loadConfig({ FEDSSL_DATA_DIR: dir, FEDSSL_KEY_GRACE_SECONDS: '3600' });
  const repo = await new SiteRepository(db).init();
  const audit = await new AuditLog(db, clock).init();
  const registry = new SiteRegistryService(repo, new PresenceService(), db, audit, clock, silent, config);
  const enrollment = new EnrollmentService(
    repo,
    new CoordinatorKeysService(config, silent),
    db,
    audit,
    clock,
    silent,
  );
  return { clock, repo, audit, registry, enrollment };
}

describe('site key rotation', () => {
  let dir: string;
  let db: SqliteStore;
  let p: Awaited<ReturnType<typeof platform>>;
  let siteId: string;
  const first = generatePartyKeys();

  const rotation = (oldKeys: PartyKeys, newKeys: PartyKeys, over: { issuedAt?: string } = {}) =>
    signSiteKeyRotation(
      {
        siteId,
        previousKeyId: keyId(oldKeys.signing.publicKey),
        signingPublicKey: toBase64(newKeys.signing.publicKey),
        boxPublicKey: toBase64(newKeys.box.publicKey),
        issuedAt: over.issuedAt ?? new Date(p.clock.now()).toISOString(),
        nonce: toBase64(randomBytes(32)),
      },
      oldKeys.signing.secretKey,
      newKeys.signing.secretKey,
    );

  /** Which key the registry checks a signature of `signer` with (throws for an expired key). */
  const checkedWith = async (signer: PartyKeys) => {
    const site = (await p.registry.get(siteId))!;
    const msg = new TextEncoder().encode('challenge');
    const sig = signBytes(msg, signer.signing.secretKey);
    const key = p.registry.signingKeyFor(site, (pk) => verifyBytes(msg, sig, pk));
    return { verifies: verifyBytes(msg, sig, key), keyId: keyId(key) };
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-site-keys-'));
    db = SqliteStore.open(join(dir, 'fedssl.sqlite'));
    p = await platform(db, dir);
    const issued = await p.enrollment.issueToken('St Mary', 3600);
    siteId = issued.siteId;
    await p.enrollment.enroll(enrollRequest(issued.token, first));
  });
  afterEach(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('enrollment registers the first key; rotation makes the new key current and keeps the old one for the grace period', async () => {
    const second = generatePartyKeys();
    const res = await p.registry.rotateKeys(siteId, rotation(first, second));
    expect(res).toEqual({
      siteId,
      keyId: keyId(second.signing.publicKey),
      previousKeyId: keyId(first.signing.publicKey),
      previousKeyValidUntil: '2026-01-01T01:00:00.000Z',
    });
    const site = (await p.registry.get(siteId))!;
    expect(site.signingPublicKey).toBe(toBase64(second.signing.publicKey));
    expect(site.boxPublicKey).toBe(toBase64(second.box.publicKey));
    expect(toSiteResponse(site, false, p.clock.now()).keys).toEqual([
      {
        keyId: keyId(first.signing.publicKey),
        signingPublicKey: toBase64(first.signing.publicKey),
        boxPublicKey: toBase64(first.box.publicKey),
        createdAt: '2026-01-01T00:00:00.000Z',
        retiredAt: '2026-01-01T00:00:00.000Z',
        validUntil: '2026-01-01T01:00:00.000Z',
        status: 'grace',
      },
      {
        keyId: keyId(second.signing.publicKey),
        signingPublicKey: toBase64(second.signing.publicKey),
        boxPublicKey: toBase64(second.box.publicKey),
        createdAt: '2026-01-01T00:00:00.000Z',
        retiredAt: null,
        validUntil: null,
        status: 'current',
      },
    ]);
    const entries = await p.audit.list({ limit: 10 });
    expect(entries.map((e) => e.action)).toContain('site.keys-rotated');
    expect(entries.find((e) => e.action === 'site.keys-rotated')).toMatchObject({
      actor: `site:${siteId}`,
      target: siteId,
      details: { previousKeyId: keyId(first.signing.publicKey), keyId: keyId(second.signing.publicKey) },
    });

    // Both keys verify during the grace period; the old one is refused by name after it.
    expect(await checkedWith(second)).toEqual({ verifies: true, keyId: keyId(second.signing.publicKey) });
    p.clock.t = Date.parse('2026-01-01T00:59:59.999Z');
    expect(await checkedWith(first)).toEqual({ verifies: true, keyId: keyId(first.signing.publicKey) });
    p.clock.t = Date.parse('2026-01-01T01:00:00.000Z');
    await expect(checkedWith(first)).rejects.toThrow(
      `site ${siteId} signed with key ${keyId(first.signing.publicKey)}, replaced at 2026-01-01T00:00:00.000Z; its grace period ended at 2026-01-01T01:00:00.000Z. Restart the agent so it uses its new keys`,
    );
    expect(await codeOf(() => checkedWith(first))).toBe('SITE_KEY_EXPIRED');
    expect(toSiteResponse((await p.registry.get(siteId))!, false, p.clock.now()).keys[0]?.status).toBe(
      'expired',
    );
    // A key the site never had still fails the caller's own check (not as "expired").
    expect((await checkedWith(generatePartyKeys())).verifies).toBe(false);
  });

  it('answers a retried rotation with the same result, and refuses rotating from a replaced key', async () => {
    const second = generatePartyKeys();
    const signed = rotation(first, second);
    const res = await p.registry.rotateKeys(siteId, signed);
    p.clock.t += 60_000;
    expect(await p.registry.rotateKeys(siteId, signed)).toEqual(res);
    expect((await p.registry.get(siteId))?.keys).toHaveLength(2);
    // The replaced (perhaps leaked) key cannot rotate the site onto a key of its choosing.
    expect(await codeOf(() => p.registry.rotateKeys(siteId, rotation(first, generatePartyKeys())))).toBe(
      'SITE_KEY_ROTATION_INVALID',
    );
    // The current key can rotate again; both older keys keep their own grace periods.
    const third = generatePartyKeys();
    await p.registry.rotateKeys(siteId, rotation(second, third));
    const keys = (await p.registry.get(siteId))!.keys;
    expect(keys.map((k) => [k.keyId, k.validUntil])).toEqual([
      [keyId(first.signing.publicKey), '2026-01-01T01:00:00.000Z'],
      [keyId(second.signing.publicKey), '2026-01-01T01:01:00.000Z'],
      [keyId(third.signing.publicKey), null],
    ]);
  });

  it('refuses stale, foreign, reused and revoked rotations without changing anything', async () => {
    const stale = rotation(first, generatePartyKeys(), { issuedAt: '2025-12-31T23:49:59.000Z' });
    await expect(p.registry.rotateKeys(siteId, stale)).rejects.toThrow(
      "rotation was issued at 2025-12-31T23:49:59.000Z, more than 10 minutes from the coordinator's clock (2026-01-01T00:00:00.000Z); check the agent's clock",
    );
    const second = generatePartyKeys();
    await expect(p.registry.rotateKeys('site-other', rotation(first, second))).rejects.toThrow(
      `rotation is for site ${siteId}, not site-other`,
    );
    // Another site's key cannot be taken over.
    const other = await p.enrollment.issueToken('St John', 3600);
    const otherKeys = generatePartyKeys();
    await p.enrollment.enroll(enrollRequest(other.token, otherKeys));
    expect(await codeOf(() => p.registry.rotateKeys(siteId, rotation(first, otherKeys)))).toBe(
      'ENROLLMENT_KEY_IN_USE',
    );
    expect((await p.registry.get(siteId))?.keys).toHaveLength(1);
    await p.registry.revoke(siteId, 'decommissioned');
    expect(await codeOf(() => p.registry.rotateKeys(siteId, rotation(first, second)))).toBe('SITE_REVOKED');
    expect((await p.registry.get(siteId))?.signingPublicKey).toBe(toBase64(first.signing.publicKey));
  });

  it('a key once registered can never enroll another site, even after it was rotated away', async () => {
    await p.registry.rotateKeys(siteId, rotation(first, generatePartyKeys()));
    const again = await p.enrollment.issueToken('St Paul', 3600);
    expect(await codeOf(() => p.enrollment.enroll(enrollRequest(again.token, first)))).toBe(
      'ENROLLMENT_KEY_IN_USE',
    );
  });
});

describe.each([
  [
    'SQLite',
    (dir: string): Promise<SqlStore> => Promise.resolve(SqliteStore.open(join(dir, 'fedssl.sqlite'))),
  ],
  [
    'PostgreSQL',
    (): Promise<SqlStore> =>
      PostgresStore.open({ url: PG_URL, schema: `t_${randomBytes(6).toString('hex')}` }),
  ],
])('enrollment and rotation on %s', (_name, open) => {
  let dir: string;
  let db: SqlStore;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-enroll-race-'));
    db = await open(dir);
  });
  afterEach(async () => {
    if (db instanceof PostgresStore) await db.dropSchema();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('two concurrent enrollments with one token: exactly one wins, the other is refused as used', async () => {
    const p = await platform(db, dir);
    for (let i = 0; i < 3; i++) {
      const issued = await p.enrollment.issueToken(`Race ${i}`, 3600);
      const a = generatePartyKeys();
      const b = generatePartyKeys();
      const results = await Promise.allSettled([
        p.enrollment.enroll(enrollRequest(issued.token, a)),
        p.enrollment.enroll(enrollRequest(issued.token, b)),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect(isFedsslErrorLike(lost[0]!.reason) && lost[0]!.reason.code).toBe('ENROLLMENT_TOKEN_USED');
      // The registered key is the winner's, and it is the only key of the site.
      const site = (await p.registry.get(issued.siteId))!;
      const winner = results[0]!.status === 'fulfilled' ? a : b;
      expect(site.signingPublicKey).toBe(toBase64(winner.signing.publicKey));
      expect(site.keys.map((k) => k.keyId)).toEqual([keyId(winner.signing.publicKey)]);
    }
  });

  it('two concurrent rotations from the same key: exactly one applies, the site keeps one current key', async () => {
    const p = await platform(db, dir);
    const issued = await p.enrollment.issueToken('Rotation race', 3600);
    const first = generatePartyKeys();
    await p.enrollment.enroll(enrollRequest(issued.token, first));
    const rotate = (next: PartyKeys) =>
      p.registry.rotateKeys(
        issued.siteId,
        signSiteKeyRotation(
          {
            siteId: issued.siteId,
            previousKeyId: keyId(first.signing.publicKey),
            signingPublicKey: toBase64(next.signing.publicKey),
            boxPublicKey: toBase64(next.box.publicKey),
            issuedAt: new Date(p.clock.now()).toISOString(),
            nonce: toBase64(randomBytes(32)),
          },
          first.signing.secretKey,
          next.signing.secretKey,
        ),
      );
    const candidates = [generatePartyKeys(), generatePartyKeys()];
    const results = await Promise.allSettled(candidates.map(rotate));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    expect(isFedsslErrorLike(lost.reason) && lost.reason.code).toBe('SITE_KEY_ROTATION_INVALID');
    const winner = candidates[results.findIndex((r) => r.status === 'fulfilled')]!;
    const site = (await p.registry.get(issued.siteId))!;
    expect(site.signingPublicKey).toBe(toBase64(winner.signing.publicKey));
    expect(site.keys.filter((k) => k.validUntil === null).map((k) => k.keyId)).toEqual([
      keyId(winner.signing.publicKey),
    ]);
  });

  it('a token is refused once expired, and after one use', async () => {
    const p = await platform(db, dir);
    const issued = await p.enrollment.issueToken('Expiry', 60);
    p.clock.t += 60_000;
    expect(await codeOf(() => p.enrollment.enroll(enrollRequest(issued.token, generatePartyKeys())))).toBe(
      'ENROLLMENT_TOKEN_EXPIRED',
    );
    const fresh = await p.enrollment.issueToken('Once', 60);
    await p.enrollment.enroll(enrollRequest(fresh.token, generatePartyKeys()));
    expect(await codeOf(() => p.enrollment.enroll(enrollRequest(fresh.token, generatePartyKeys())))).toBe(
      'ENROLLMENT_TOKEN_USED',
    );
  });
});

describe('rememberingVerifier', () => {
  it('checks each key once and keeps each answer', () => {
    const keys = generatePartyKeys();
    const other = generatePartyKeys();
    const message = randomBytes(32);
    const signature = signBytes(message, keys.signing.secretKey);
    let checks = 0;
    const verify = rememberingVerifier((pk) => {
      checks++;
      return verifyBytes(message, signature, pk);
    });
    expect([verify(keys.signing.publicKey), verify(keys.signing.publicKey)]).toEqual([true, true]);
    expect([verify(other.signing.publicKey), verify(other.signing.publicKey)]).toEqual([false, false]);
    expect(checks).toBe(2);
  });
});
