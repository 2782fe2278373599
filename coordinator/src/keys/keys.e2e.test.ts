import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  fromBase64,
  generatePartyKeys,
  keyId,
  signSiteKeyRotation,
  toBase64,
  verifySignedModelManifest,
} from '@fedssl/shared/crypto';
import type { CoordinatorKeyChain, SignedModelManifest, Ack } from '@fedssl/shared/protocol';
import { testRunBody } from '../runs/federation.fixture';
import { PresenceService } from '../sites/presence.service';
import { runAdminCliAt } from '../testing/admin-cli';
import type { RestClient } from '../testing/rest-client';
import { SocketAgents, sealDelta, sendUpload } from '../testing/socket-agents';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';
import { CoordinatorKeysService } from './coordinator-keys.service';

/**
 * Keys at the socket edge of a whole coordinator (port 0, raw socket.io clients): a revoked
 * site is cut off inside the revoking request, mid-upload, and cannot come back; a
 * coordinator key rotation in the middle of a round keeps tasks, manifests and updates
 * sealed to the old box key working for the grace period, and refuses the latter after it.
 */
describe('keys at the socket edge (whole coordinator on port 0)', () => {
  let c: TestCoordinator;
  let dataDir: string;
  let admin: string;
  let rest: RestClient;
  let agents: SocketAgents;

  beforeEach(async () => {
    // Site keys replaced here stay accepted for 1 s (coordinator rotations below name their own grace).
    c = await startTestCoordinator({ prefix: 'fedssl-keys-sock-', config: { keyGraceSeconds: 1 } });
    dataDir = c.dataDir;
    admin = await c.token('admin');
    rest = c.rest(admin);
    agents = new SocketAgents(c.url, rest);
  });
  afterEach(async () => {
    agents.closeAll();
    await c.close();
  });

  it('revoking a site disconnects it within the request, drops its half-sent upload, and refuses it from then on', async () => {
    const run = await rest.ok('POST', '/runs', testRunBody({ rounds: 1, minSites: 1 }));
    await rest.ok('POST', `/runs/${run.id as string}/start`);
    const a = await agents.enroll('Revoked hospital');
    const task = await a.task;
    const sealed = sealDelta(a, task, { boxPublicKey: a.pinned.box });
    expect(sealed.chunks.length).toBeGreaterThan(2);
    const uploadId = (await sendUpload(a.socket, sealed, 2)).uploadId; // two chunks in, the rest never sent
    const partsDir = join(dataDir, 'uploads');
    const partFiles = () =>
      existsSync(partsDir) ? readdirSync(partsDir, { recursive: true }).map(String) : [];
    expect(partFiles().some((f) => f.includes(uploadId))).toBe(true);

    const refused = new Promise<{ code: string }>((resolve) => a.socket.once('error', resolve));
    const gone = new Promise<string>((resolve) => a.socket.once('disconnect', resolve));
    const presence = c.app.get(PresenceService);
    expect(presence.isOnline(a.siteId)).toBe(true);
    const revoked = await rest.ok('POST', `/sites/${a.siteId}/revoke`, { reason: 'key leaked' });
    // By the time the revoking request answers, the coordinator has already cut the site off.
    expect(revoked).toMatchObject({ status: 'revoked', online: false });
    expect(presence.isOnline(a.siteId)).toBe(false);
    expect(partFiles().some((f) => f.includes(uploadId))).toBe(false);
    expect(await refused).toEqual({ code: 'SITE_REVOKED', message: 'site was revoked' });
    expect(await gone).toBe('io server disconnect');

    // The same key cannot come back.
    const again = agents.connect(a.siteId, a.keys);
    expect(await new Promise((resolve) => again.once('error', resolve))).toEqual({
      code: 'SITE_REVOKED',
      message: `site ${a.siteId} is revoked`,
    });
  });

  it("a connection authenticated with a site's replaced key is dropped when its grace period ends", async () => {
    const a = await agents.enroll('Rotating hospital');
    const next = generatePartyKeys();
    const rotation = signSiteKeyRotation(
      {
        siteId: a.siteId,
        previousKeyId: keyId(a.keys.signing.publicKey),
        signingPublicKey: toBase64(next.signing.publicKey),
        boxPublicKey: toBase64(next.box.publicKey),
        issuedAt: new Date().toISOString(),
        nonce: toBase64(new Uint8Array(32).fill(1)),
      },
      a.keys.signing.secretKey,
      next.signing.secretKey,
    );
    const dropped = new Promise<unknown>((resolve) => a.socket.once('error', resolve));
    const res = await rest.ok('POST', `/sites/${a.siteId}/keys/rotate`, rotation, null);
    // A connection with the new key is not touched.
    const fresh = agents.connect(a.siteId, next);
    expect(res).toMatchObject({
      keyId: keyId(next.signing.publicKey),
      previousKeyId: keyId(a.keys.signing.publicKey),
    });
    await new Promise((resolve) => fresh.once('auth:ok', resolve));
    expect(await dropped).toEqual({
      code: 'SITE_KEY_EXPIRED',
      message: `site key ${keyId(a.keys.signing.publicKey)} was replaced and its grace period has ended; restart the agent with its new keys`,
    });
    expect(fresh.connected).toBe(true);
    expect(c.app.get(PresenceService).isOnline(a.siteId)).toBe(true);
    // And the old key cannot authenticate again.
    const stale = agents.connect(a.siteId, a.keys);
    expect(await new Promise((resolve) => stale.once('error', resolve))).toMatchObject({
      code: 'SITE_KEY_EXPIRED',
    });
  });

  it('a coordinator key rotation mid-round: tasks and manifests follow the new key, old-box-key updates are opened in grace and refused after', async () => {
    const run = await rest.ok('POST', '/runs', testRunBody({ rounds: 1, minSites: 2 }));
    const runId = run.id as string;
    await rest.ok('POST', `/runs/${runId}/start`);
    const a = await agents.enroll('Hospital A');
    const b = await agents.enroll('Hospital B');
    const [ta, tb] = await Promise.all([a.task, b.task]);
    const oldBox = a.pinned.box;

    // Rotation with a grace period: both agents hear of it at once over their sockets.
    const heard = Promise.all([a, b].map((x) => new Promise((r) => x.socket.once('keys:announce', r))));
    const rotation = await rest.ok('POST', '/coordinator/keys/rotate', { graceSeconds: 3600 });
    await heard;
    expect(toBase64(a.pinned.signing)).toBe(
      (await rest.ok('GET', '/coordinator/keys', undefined, null)).signingPublicKey,
    );

    // The base model's manifest, published before the rotation, now verifies with the new key.
    const sm = (await a.socket.emitWithAck('model:manifest', {
      version: ta.modelVersion,
    })) as Ack<SignedModelManifest>;
    if (!sm.ok) throw new Error(sm.error.message);
    expect(sm.keyId).toBe(rotation.keyId);
    expect(verifySignedModelManifest(sm, a.pinned.signing).version).toBe(ta.modelVersion);

    // A's update was sealed to the old box key before it heard of the rotation: accepted in grace.
    const sealedA = sealDelta(a, ta, { boxPublicKey: oldBox });
    const idA = (await sendUpload(a.socket, sealedA)).uploadId;
    expect(await a.socket.emitWithAck('update:commit', { uploadId: idA })).toMatchObject({
      ok: true,
      accepted: true,
    });

    // A second rotation with no grace: the first rotation's key is still in its grace, the
    // second rotation's old key (the one B would seal to if it had not followed) is refused.
    const second = await rest.ok('POST', '/coordinator/keys/rotate', { graceSeconds: 0 });
    // The box key the first rotation introduced (its grace ended with the second rotation).
    const chain = (await rest.ok(
      'GET',
      '/coordinator/keys/chain',
      undefined,
      null,
    )) as unknown as CoordinatorKeyChain;
    const staleBox = fromBase64(chain.chain[0]!.announcement.boxPublicKey, 32);
    const sealedB = sealDelta(b, tb, { boxPublicKey: staleBox });
    const idB = (await sendUpload(b.socket, sealedB)).uploadId;
    expect(await b.socket.emitWithAck('update:commit', { uploadId: idB })).toEqual({
      ok: false,
      error: {
        code: 'COORDINATOR_KEY_EXPIRED',
        message: expect.stringMatching(
          new RegExp(
            `^update is sealed to coordinator key ${rotation.keyId as string}, replaced at .*; its grace period ended at `,
          ),
        ),
      },
    });
    expect(second.previousKeyId).toBe(rotation.keyId);
    const detail = await rest.ok('GET', `/runs/${runId}`);
    const participants = (detail.rounds as { participants: { siteId: string; state: string }[] }[])[0]!
      .participants;
    expect(Object.fromEntries(participants.map((p) => [p.siteId, p.state]))).toEqual({
      [a.siteId]: 'accepted',
      [b.siteId]: 'rejected',
    });
  });

  it('fedssl-admin keys show|rotate|history and sites keys', async () => {
    const cli = async (...argv: string[]) => {
      const { code, out } = await runAdminCliAt(c.url, admin, argv);
      return { code, out };
    };
    const keys = c.app.get(CoordinatorKeysService);
    const before = keys.publicKeys();
    expect(await cli('keys', 'show')).toEqual({
      code: 0,
      out: `key id       ${before.keyId}\nfingerprint  ${before.fingerprint}\n`,
    });
    const rotated = await cli('keys', 'rotate', '--grace-seconds', '120');
    const after = keys.publicKeys();
    expect(rotated.code).toBe(0);
    expect(rotated.out).toMatch(
      new RegExp(
        `^rotated ${before.keyId} -> ${after.keyId}; old keys accepted until \\S+\nfingerprint  ${after.fingerprint}\n$`,
      ),
    );
    const history = await cli('--json', 'keys', 'history');
    expect(
      (JSON.parse(history.out) as { keyId: string; status: string }[]).map((k) => [k.keyId, k.status]),
    ).toEqual([
      [before.keyId, 'grace'],
      [after.keyId, 'current'],
    ]);
    const a = await agents.enroll('Listed hospital');
    const siteKeys = await cli('sites', 'keys', a.siteId);
    expect(siteKeys.out).toMatch(new RegExp(`^[0-9a-f]{16}  current  created=\\S+ validUntil=-\n$`));
  });
});
