import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generatePartyKeys, keyId, verifySignedSiteKeyRotation } from '@fedssl/shared/crypto';
import type { SignedSiteKeyRotation } from '@fedssl/shared/protocol';
import { agentPaths, initAgentHome, loadPartyKeys, saveAgentConfig } from '../config/agent-config';
import type { CliIo } from './commands';
import { nextKeysPath, rotateKeysCommand } from './key-commands';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const quiet = (): CliIo & { lines: string[] } => {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l) };
};

async function enrolledHome(): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'fedssl-rotate-'));
  dirs.push(home);
  const { config } = await initAgentHome({ home, data: { path: home } });
  const c = generatePartyKeys();
  await saveAgentConfig(home, {
    ...config,
    siteId: 'site-a',
    siteName: 'A',
    coordinatorUrl: 'http://coordinator.test',
    coordinator: {
      keyId: keyId(c.signing.publicKey),
      signingPublicKey: Buffer.from(c.signing.publicKey).toString('base64'),
      boxPublicKey: Buffer.from(c.box.publicKey).toString('base64'),
      fingerprint: 'x',
    },
  });
  return home;
}

/** A coordinator double answering each POST with the next scripted status; records bodies. */
function scripted(statuses: number[]) {
  const bodies: SignedSiteKeyRotation[] = [];
  const urls: string[] = [];
  const fetchImpl = (async (url: string, init?: RequestInit) => {
    urls.push(url);
    const body = JSON.parse(String(init?.body)) as SignedSiteKeyRotation;
    bodies.push(body);
    const status = statuses.shift() ?? 500;
    const payload =
      status === 200
        ? {
            siteId: 'site-a',
            keyId: keyId(Buffer.from(body.rotation.signingPublicKey, 'base64')),
            previousKeyId: body.rotation.previousKeyId,
            previousKeyValidUntil: '2026-01-02T00:00:00.000Z',
          }
        : { code: 'SITE_KEY_ROTATION_INVALID', message: 'refused by the test' };
    return new Response(JSON.stringify(payload), {
      status,
      headers: { 'content-type': 'application/json' },
    });
  }) as typeof fetch;
  return { fetchImpl, bodies, urls };
}

describe('rotate-keys', () => {
  it('resumes an interrupted rotation with the same new keys, and installs them only once accepted', async () => {
    const home = await enrolledHome();
    const before = await loadPartyKeys(home);
    const coordinator = scripted([503, 200]);
    await expect(
      rotateKeysCommand({ home, fetchImpl: coordinator.fetchImpl }, quiet()),
    ).rejects.toMatchObject({
      code: 'SITE_KEY_ROTATION_INVALID',
    });
    // Not accepted: the site keeps its keys, the new ones wait for the next attempt.
    expect((await loadPartyKeys(home)).signing.publicKey).toEqual(before.signing.publicKey);
    expect(existsSync(nextKeysPath(home))).toBe(true);
    const pending = await readFile(nextKeysPath(home), 'utf8');

    const io = quiet();
    expect(await rotateKeysCommand({ home, fetchImpl: coordinator.fetchImpl }, io)).toBe(0);
    expect(coordinator.urls).toEqual([
      'http://coordinator.test/api/v1/sites/site-a/keys/rotate',
      'http://coordinator.test/api/v1/sites/site-a/keys/rotate',
    ]);
    const [first, second] = coordinator.bodies;
    expect(second!.rotation.signingPublicKey).toBe(first!.rotation.signingPublicKey);
    // Signed by the old key and the new one.
    expect(verifySignedSiteKeyRotation(second!, before.signing.publicKey).previousKeyId).toBe(
      keyId(before.signing.publicKey),
    );
    const after = await loadPartyKeys(home);
    expect(Buffer.from(after.signing.publicKey).toString('base64')).toBe(second!.rotation.signingPublicKey);
    expect(await readFile(agentPaths(home).keys, 'utf8')).toBe(pending);
    expect(existsSync(nextKeysPath(home))).toBe(false);
    expect(io.lines[0]).toBe(`Resuming an interrupted rotation to key ${keyId(after.signing.publicKey)}.`);
  });

  it('a refusal forgets the new keys, so the next attempt starts with fresh ones', async () => {
    const home = await enrolledHome();
    const before = await loadPartyKeys(home);
    const coordinator = scripted([400]);
    await expect(rotateKeysCommand({ home, fetchImpl: coordinator.fetchImpl }, quiet())).rejects.toThrow(
      'key rotation refused: refused by the test',
    );
    expect(existsSync(nextKeysPath(home))).toBe(false);
    expect((await loadPartyKeys(home)).signing.publicKey).toEqual(before.signing.publicKey);
  });
});
