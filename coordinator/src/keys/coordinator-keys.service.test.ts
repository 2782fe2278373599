import { describe, it, expect, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import {
  fingerprint,
  followCoordinatorKeyChain,
  fromBase64,
  generatePartyKeys,
  keyId,
  sealUpdate,
  signBytes,
  signModelManifest,
  signTask,
  toBase64,
  verifyBytes,
  verifySignedModelManifest,
  verifySignedTask,
} from '@fedssl/shared/crypto';
import { tinyModelConfig, trainingConfigSchema } from '@fedssl/shared/model';
import { PROTOCOL_VERSION, coordinatorKeysSchema, type Task } from '@fedssl/shared/protocol';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService, coordinatorKeysFile } from './coordinator-keys.service';

const silent = pino({ level: 'silent' });

describe('CoordinatorKeysService', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const dataDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'fedssl-keys-'));
    dirs.push(d);
    return d;
  };

  it('creates keys once (0600) and reloads the same keys', () => {
    const dir = dataDir();
    const config = loadConfig({ FEDSSL_DATA_DIR: dir });
    const a = new CoordinatorKeysService(config, silent);
    expect(statSync(coordinatorKeysFile(dir)).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, 'keys'))).toEqual(['coordinator-keys.json']);
    const b = new CoordinatorKeysService(config, silent);
    expect(b.publicKeys()).toEqual(a.publicKeys());
    expect(b.keyId).toBe(keyId(a.keys.signing.publicKey));

    const pub = coordinatorKeysSchema.parse(a.publicKeys());
    expect(pub.fingerprint).toBe(fingerprint(a.keys.signing.publicKey, a.keys.box.publicKey));
    // The published signing key verifies what the secret key signs.
    const msg = new TextEncoder().encode('hello');
    expect(
      verifyBytes(msg, signBytes(msg, a.keys.signing.secretKey), fromBase64(pub.signingPublicKey, 32)),
    ).toBe(true);
  });

  it('refuses a corrupted key file instead of regenerating', () => {
    const dir = dataDir();
    const config = loadConfig({ FEDSSL_DATA_DIR: dir });
    new CoordinatorKeysService(config, silent);
    writeFileSync(coordinatorKeysFile(dir), '{"format":"nope"}');
    expect(() => new CoordinatorKeysService(config, silent)).toThrow(/restore it from backup/);
  });
});

describe('CoordinatorKeysService rotation', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const setup = (graceSeconds = '3600') => {
    const dir = mkdtempSync(join(tmpdir(), 'fedssl-keys-'));
    dirs.push(dir);
    const clock = { t: Date.parse('2026-01-01T00:00:00.000Z'), now: () => clock.t };
    const config = loadConfig({ FEDSSL_DATA_DIR: dir, FEDSSL_KEY_GRACE_SECONDS: graceSeconds });
    return { dir, clock, config, keys: new CoordinatorKeysService(config, silent, clock) };
  };
  const sealTo = (boxPublicKey: Uint8Array) =>
    sealUpdate({
      plaintext: new Uint8Array([1, 2, 3]),
      fields: {
        protocolVersion: PROTOCOL_VERSION,
        siteId: 'site-a',
        runId: 'run-1',
        round: 1,
        taskId: 'task-1',
        taskNonce: toBase64(new Uint8Array(32)),
        baseModelHash: 'a'.repeat(64),
        exampleCount: 1,
        metrics: {},
        createdAt: '2026-01-01T00:00:00.000Z',
      },
      chunkSize: 1024,
      siteSigningSecretKey: generatePartyKeys().signing.secretKey,
      coordinatorBoxPublicKey: boxPublicKey,
    }).header;

  it('rotates to a new key id, announces it signed by the old key, and reloads the same keyring', () => {
    const { config, clock, keys } = setup();
    const pinned = keys.publicKeys();
    const old = keys.keys;
    const events: unknown[] = [];
    keys.on('rotated', (r) => events.push(r));
    const r = keys.rotate();
    expect(r).toEqual({
      previousKeyId: pinned.keyId,
      keyId: keyId(keys.keys.signing.publicKey),
      fingerprint: keys.publicKeys().fingerprint,
      previousKeyValidUntil: '2026-01-01T01:00:00.000Z',
    });
    expect(events).toEqual([r]);
    expect(keys.keyId).not.toBe(pinned.keyId);
    expect(keys.keys.signing.publicKey).not.toEqual(old.signing.publicKey);
    // An agent that pinned the old key follows the chain to exactly the new public keys.
    const chain = keys.keyChain();
    expect(followCoordinatorKeyChain(pinned, chain.chain).keys).toEqual(keys.publicKeys());
    expect(chain.current).toEqual(keys.publicKeys());
    // A restart loads the rotated keyring (0600), with the same history.
    expect(statSync(coordinatorKeysFile(config.dataDir)).mode & 0o777).toBe(0o600);
    const reloaded = new CoordinatorKeysService(config, silent, clock);
    expect(reloaded.publicKeys()).toEqual(keys.publicKeys());
    expect(reloaded.keyChain()).toEqual(chain);
    expect(reloaded.history().map((h) => [h.keyId, h.status, h.validUntil])).toEqual([
      [pinned.keyId, 'grace', '2026-01-01T01:00:00.000Z'],
      [keys.keyId, 'current', null],
    ]);
    clock.t = Date.parse('2026-01-01T01:00:00.000Z');
    expect(reloaded.history()[0]?.status).toBe('expired');
  });

  it('a key file it cannot write refuses the rotation with a coded error and keeps the keys in use', () => {
    const { config, keys } = setup();
    const before = keys.publicKeys();
    // The temporary sibling cannot be created (a directory is in the way), as on a read-only mount.
    mkdirSync(`${coordinatorKeysFile(config.dataDir)}.tmp-${process.pid}`);
    expect(() => keys.rotate()).toThrow(
      'cannot write the coordinator key file (EISDIR); if it is mounted read-only (e.g. a Kubernetes Secret), rotate offline with fedssl-coordinator rotate-keys and update the mount (docs/keys.md)',
    );
    expect(keys.publicKeys()).toEqual(before);
    expect(keys.keyChain().chain).toEqual([]);
  });

  it('reads the first key-file format and keeps its key as the first of the keyring', () => {
    const { dir, clock, config } = setup();
    const party = generatePartyKeys();
    writeFileSync(
      coordinatorKeysFile(dir),
      JSON.stringify({
        format: 'fedssl-coordinator-keys-v1',
        signingSecretKey: toBase64(party.signing.secretKey),
        boxSecretKey: toBase64(party.box.secretKey),
        createdAt: '2025-01-01T00:00:00.000Z',
      }),
    );
    const keys = new CoordinatorKeysService(config, silent, clock);
    expect(keys.keyId).toBe(keyId(party.signing.publicKey));
    keys.rotate();
    const again = new CoordinatorKeysService(config, silent, clock);
    expect(again.history().map((h) => h.keyId)).toEqual([keyId(party.signing.publicKey), keys.keyId]);
  });

  it('opens updates sealed to the old box key during the grace period, then refuses them by key id', () => {
    const { clock, keys } = setup();
    const oldBox = keys.keys.box;
    const oldId = keys.keyId;
    const toOld = sealTo(oldBox.publicKey);
    keys.rotate();
    const toNew = sealTo(keys.keys.box.publicKey);
    expect(keys.boxSecretKeyFor(toNew)).toEqual(keys.keys.box.secretKey);
    expect(keys.boxSecretKeyFor(toOld)).toEqual(oldBox.secretKey);
    clock.t = Date.parse('2026-01-01T01:00:00.000Z');
    expect(() => keys.boxSecretKeyFor(toOld)).toThrow(
      `update is sealed to coordinator key ${oldId}, replaced at 2026-01-01T00:00:00.000Z; its grace period ended at 2026-01-01T01:00:00.000Z. Update the agent's pinned coordinator key (it follows the key chain on reconnect)`,
    );
    // An update accepted in time is still aggregated after the grace period.
    expect(keys.boxSecretKeyFor(toOld, { allowExpired: true })).toEqual(oldBox.secretKey);
    // Sealed to a key the coordinator never had: the current key, so opening fails as unsealable.
    expect(keys.boxSecretKeyFor(sealTo(generatePartyKeys().box.publicKey))).toEqual(keys.keys.box.secretKey);
  });

  it('re-signs stored tasks and manifests with the current key, naming it', () => {
    const { keys } = setup();
    const task: Task = {
      taskId: 'task-1',
      runId: 'run-1',
      round: 1,
      siteId: 'site-a',
      modelVersion: 'run-1.r0',
      modelHash: 'a'.repeat(64),
      model: tinyModelConfig(32),
      training: trainingConfigSchema.parse({}),
      nonce: toBase64(new Uint8Array(32)),
      issuedAt: '2026-01-01T00:00:00.000Z',
      deadline: '2026-01-01T01:00:00.000Z',
    };
    const stored = signTask(task, keys.keys.signing.secretKey);
    expect(keys.currentTask(stored)).toMatchObject({ keyId: keys.keyId });
    const manifest = signModelManifest(
      {
        version: 'v1',
        runId: null,
        round: 0,
        model: tinyModelConfig(32),
        weightsSha256: 'b'.repeat(64),
        weightsBytes: 1,
        parentVersion: null,
        parentSha256: null,
        sites: [],
        strategy: 'fedavg',
        createdAt: '2026-01-01T00:00:00.000Z',
      },
      keys.keys.signing.secretKey,
      keys.keyId,
    );
    expect(keys.currentManifest(manifest)).toBe(manifest);
    keys.rotate();
    const task2 = keys.currentTask(stored);
    expect(task2.keyId).toBe(keys.keyId);
    expect(verifySignedTask(task2, keys.keys.signing.publicKey)).toEqual(stored.task);
    const manifest2 = keys.currentManifest(manifest);
    expect(manifest2.keyId).toBe(keys.keyId);
    expect(verifySignedModelManifest(manifest2, keys.keys.signing.publicKey)).toEqual(manifest.manifest);
  });
});
