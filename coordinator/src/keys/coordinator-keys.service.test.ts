import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { fingerprint, fromBase64, keyId, signBytes, verifyBytes } from '@fedssl/shared/crypto';
import { coordinatorKeysSchema } from '@fedssl/shared/protocol';
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
