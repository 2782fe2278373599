import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { io, type Socket } from 'socket.io-client';
import { encodeWeights } from '@fedssl/shared/codec';
import {
  fromBase64,
  generatePartyKeys,
  keyId,
  sealUpdate,
  signSiteKeyRotation,
  signBytes,
  toBase64,
  verifySignedModelManifest,
  verifySignedTask,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type Ack,
  type AuthChallenge,
  type CoordinatorKeyChain,
  type SignedModelManifest,
  type SignedTask,
  type Task,
} from '@fedssl/shared/protocol';
import { AdminTokenService } from '../admin/admin-token.service';
import { startCoordinator, type RunningCoordinator } from '../main';
import { constantDelta, testRunBody } from '../runs/federation.fixture';
import { PresenceService } from '../sites/presence.service';
import { runAdminCli } from '../cli/admin-cli';
import { CoordinatorKeysService } from './coordinator-keys.service';

/**
 * Keys at the socket edge of a whole coordinator (port 0, raw socket.io clients): a revoked
 * site is cut off inside the revoking request, mid-upload, and cannot come back; a
 * coordinator key rotation in the middle of a round keeps tasks, manifests and updates
 * sealed to the old box key working for the grace period, and refuses the latter after it.
 */
describe('keys at the socket edge (whole coordinator on port 0)', () => {
  let c: RunningCoordinator;
  let dataDir: string;
  let admin: string;
  const sockets: Socket[] = [];

  beforeEach(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'fedssl-keys-sock-'));
    c = await startCoordinator(
      // Site keys replaced here stay accepted for 1 s (coordinator rotations below name their own grace).
      { host: '127.0.0.1', port: 0, dataDir, databaseUrl: null, logLevel: 'silent', keyGraceSeconds: 1 },
      pino({ level: 'silent' }),
    );
    admin = (await c.app.get(AdminTokenService).create('admin', 'admin')).token;
  });
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.disconnect();
    await c.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function http(method: string, path: string, body?: unknown, token: string | null = admin) {
    const res = await fetch(`${c.url}/api/v1${path}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.status >= 300) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  function connect(siteId: string, keys: PartyKeys): Socket {
    const socket = io(`${c.url}${AGENT_NAMESPACE}`, {
      auth: { siteId, protocolVersion: PROTOCOL_VERSION, agentVersion: 't' },
      transports: ['websocket'],
      reconnection: false,
    });
    sockets.push(socket);
    socket.once('auth:challenge', (ch: AuthChallenge) =>
      socket.emit('auth:response', {
        signature: signBytes(authChallengeBytes(ch.nonce, siteId), keys.signing.secretKey),
      }),
    );
    return socket;
  }

  /** Enrolls over HTTP, connects, authenticates; `task` resolves with its first verified task. */
  async function agent(name: string) {
    const tok = await http('POST', '/enrollment-tokens', { siteName: name });
    const keys = generatePartyKeys();
    const enrolled = await http(
      'POST',
      '/enroll',
      {
        token: tok.token,
        signingPublicKey: toBase64(keys.signing.publicKey),
        boxPublicKey: toBase64(keys.box.publicKey),
        agentVersion: 't',
        protocolVersion: PROTOCOL_VERSION,
      },
      null,
    );
    const siteId = enrolled.siteId as string;
    const ck = enrolled.coordinator as { signingPublicKey: string; boxPublicKey: string };
    // What the agent trusts; a live rotation replaces it (the real agent checks the chain).
    const pinned = { signing: fromBase64(ck.signingPublicKey, 32), box: fromBase64(ck.boxPublicKey, 32) };
    const socket = connect(siteId, keys);
    socket.on('keys:announce', (chain: CoordinatorKeyChain) => {
      pinned.signing = fromBase64(chain.current.signingPublicKey, 32);
      pinned.box = fromBase64(chain.current.boxPublicKey, 32);
    });
    const task = new Promise<Task>((resolve, reject) =>
      socket.on('task:offer', (st: SignedTask, ack: (r: Ack) => void) => {
        try {
          const t = verifySignedTask(st, pinned.signing);
          ack({ ok: true });
          resolve(t);
        } catch (e) {
          ack({ ok: false, error: { code: 'TASK_SIGNATURE_INVALID', message: String(e) } });
          reject(e as Error);
        }
      }),
    );
    await new Promise((resolve) => socket.once('auth:ok', resolve));
    return { siteId, keys, pinned, socket, task };
  }

  function seal(a: Awaited<ReturnType<typeof agent>>, task: Task, boxPublicKey: Uint8Array) {
    return sealUpdate({
      plaintext: encodeWeights(constantDelta(task.model, 0.1)),
      fields: {
        protocolVersion: PROTOCOL_VERSION,
        siteId: a.siteId,
        runId: task.runId,
        round: task.round,
        taskId: task.taskId,
        taskNonce: task.nonce,
        baseModelHash: task.modelHash,
        exampleCount: 10,
        metrics: {},
        createdAt: new Date().toISOString(),
      },
      chunkSize: 1024,
      siteSigningSecretKey: a.keys.signing.secretKey,
      coordinatorBoxPublicKey: boxPublicKey,
    });
  }

  async function upload(socket: Socket, sealed: ReturnType<typeof seal>, chunks = sealed.chunks.length) {
    const begin = (await socket.emitWithAck('update:begin', {
      header: sealed.header,
      signature: sealed.signature,
    })) as Ack<{ uploadId: string; nextIndex: number }>;
    if (!begin.ok) throw new Error(begin.error.message);
    for (let i = 0; i < chunks; i++) {
      const r = (await socket.emitWithAck('update:chunk', {
        uploadId: begin.uploadId,
        index: i,
        data: sealed.chunks[i],
      })) as Ack;
      if (!r.ok) throw new Error(r.error.message);
    }
    return begin.uploadId;
  }

  it('revoking a site disconnects it within the request, drops its half-sent upload, and refuses it from then on', async () => {
    const run = await http('POST', '/runs', testRunBody({ rounds: 1, minSites: 1 }));
    await http('POST', `/runs/${run.id as string}/start`);
    const a = await agent('Revoked hospital');
    const task = await a.task;
    const sealed = seal(a, task, a.pinned.box);
    expect(sealed.chunks.length).toBeGreaterThan(2);
    const uploadId = await upload(a.socket, sealed, 2); // two chunks in, the rest never sent
    const partsDir = join(dataDir, 'uploads');
    const partFiles = () =>
      existsSync(partsDir) ? readdirSync(partsDir, { recursive: true }).map(String) : [];
    expect(partFiles().some((f) => f.includes(uploadId))).toBe(true);

    const refused = new Promise<{ code: string }>((resolve) => a.socket.once('error', resolve));
    const gone = new Promise<string>((resolve) => a.socket.once('disconnect', resolve));
    const presence = c.app.get(PresenceService);
    expect(presence.isOnline(a.siteId)).toBe(true);
    const revoked = await http('POST', `/sites/${a.siteId}/revoke`, { reason: 'key leaked' });
    // By the time the revoking request answers, the coordinator has already cut the site off.
    expect(revoked).toMatchObject({ status: 'revoked', online: false });
    expect(presence.isOnline(a.siteId)).toBe(false);
    expect(partFiles().some((f) => f.includes(uploadId))).toBe(false);
    expect(await refused).toEqual({ code: 'SITE_REVOKED', message: 'site was revoked' });
    expect(await gone).toBe('io server disconnect');

    // The same key cannot come back.
    const again = connect(a.siteId, a.keys);
    expect(await new Promise((resolve) => again.once('error', resolve))).toEqual({
      code: 'SITE_REVOKED',
      message: `site ${a.siteId} is revoked`,
    });
  });

  it("a connection authenticated with a site's replaced key is dropped when its grace period ends", async () => {
    const a = await agent('Rotating hospital');
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
    const res = await http('POST', `/sites/${a.siteId}/keys/rotate`, rotation, null);
    // A connection with the new key is not touched.
    const fresh = connect(a.siteId, next);
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
    const stale = connect(a.siteId, a.keys);
    expect(await new Promise((resolve) => stale.once('error', resolve))).toMatchObject({
      code: 'SITE_KEY_EXPIRED',
    });
  });

  it('a coordinator key rotation mid-round: tasks and manifests follow the new key, old-box-key updates are opened in grace and refused after', async () => {
    const run = await http('POST', '/runs', testRunBody({ rounds: 1, minSites: 2 }));
    const runId = run.id as string;
    await http('POST', `/runs/${runId}/start`);
    const a = await agent('Hospital A');
    const b = await agent('Hospital B');
    const [ta, tb] = await Promise.all([a.task, b.task]);
    const oldBox = a.pinned.box;

    // Rotation with a grace period: both agents hear of it at once over their sockets.
    const heard = Promise.all([a, b].map((x) => new Promise((r) => x.socket.once('keys:announce', r))));
    const rotation = await http('POST', '/coordinator/keys/rotate', { graceSeconds: 3600 });
    await heard;
    expect(toBase64(a.pinned.signing)).toBe(
      (await http('GET', '/coordinator/keys', undefined, null)).signingPublicKey,
    );

    // The base model's manifest, published before the rotation, now verifies with the new key.
    const sm = (await a.socket.emitWithAck('model:manifest', {
      version: ta.modelVersion,
    })) as Ack<SignedModelManifest>;
    if (!sm.ok) throw new Error(sm.error.message);
    expect(sm.keyId).toBe(rotation.keyId);
    expect(verifySignedModelManifest(sm, a.pinned.signing).version).toBe(ta.modelVersion);

    // A's update was sealed to the old box key before it heard of the rotation: accepted in grace.
    const sealedA = seal(a, ta, oldBox);
    const idA = await upload(a.socket, sealedA);
    expect(await a.socket.emitWithAck('update:commit', { uploadId: idA })).toMatchObject({
      ok: true,
      accepted: true,
    });

    // A second rotation with no grace: the first rotation's key is still in its grace, the
    // second rotation's old key (the one B would seal to if it had not followed) is refused.
    const second = await http('POST', '/coordinator/keys/rotate', { graceSeconds: 0 });
    // The box key the first rotation introduced (its grace ended with the second rotation).
    const chain = (await http(
      'GET',
      '/coordinator/keys/chain',
      undefined,
      null,
    )) as unknown as CoordinatorKeyChain;
    const staleBox = fromBase64(chain.chain[0]!.announcement.boxPublicKey, 32);
    const sealedB = seal(b, tb, staleBox);
    const idB = await upload(b.socket, sealedB);
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
    const detail = await http('GET', `/runs/${runId}`);
    const participants = (detail.rounds as { participants: { siteId: string; state: string }[] }[])[0]!
      .participants;
    expect(Object.fromEntries(participants.map((p) => [p.siteId, p.state]))).toEqual({
      [a.siteId]: 'accepted',
      [b.siteId]: 'rejected',
    });
  });

  it('fedssl-admin keys show|rotate|history and sites keys', async () => {
    const cli = async (...argv: string[]) => {
      let out = '';
      const code = await runAdminCli(argv, {
        io: { stdout: (t) => void (out += t), stderr: () => undefined },
        env: { FEDSSL_URL: c.url, FEDSSL_ADMIN_TOKEN: admin },
      });
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
    const a = await agent('Listed hospital');
    const siteKeys = await cli('sites', 'keys', a.siteId);
    expect(siteKeys.out).toMatch(new RegExp(`^[0-9a-f]{16}  current  created=\\S+ validUntil=-\n$`));
  });
});
