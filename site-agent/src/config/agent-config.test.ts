import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generatePartyKeys, toBase64 } from '@fedssl/shared/crypto';
import { isFedsslError } from '@fedssl/shared/errors';
import {
  agentPaths,
  decodeKeysFile,
  encodeKeysFile,
  initAgentHome,
  loadAgentConfig,
  loadPartyKeys,
  loadPseudonymSecret,
  parseAgentConfig,
  requireEnrolled,
  resolveAgentHome,
  saveAgentConfig,
} from './agent-config';

const dirs: string[] = [];
async function tempHome(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'fedssl-home-'));
  dirs.push(d);
  return join(d, 'agent');
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const mode = async (p: string) => (await stat(p)).mode & 0o777;

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isFedsslError(e) ? e.code : 'not-fedssl';
  }
  return undefined;
}

describe('initAgentHome', () => {
  it('creates keys, secret and config with mode 0600 in a 0700 folder', async () => {
    const home = await tempHome();
    const res = await initAgentHome({ home, data: { path: 'images', imageSize: 48 } });
    const p = agentPaths(home);
    expect(await mode(p.home)).toBe(0o700);
    expect(await mode(p.stateDir)).toBe(0o700);
    for (const f of [p.config, p.keys, p.pseudonymSecret]) expect(await mode(f)).toBe(0o600);
    expect((await readFile(p.pseudonymSecret)).length).toBe(32);

    const config = await loadAgentConfig(home);
    expect(config).toEqual(res.config);
    expect(config).toMatchObject({
      siteId: null,
      coordinator: null,
      data: { path: resolve('images'), patientColumn: 'patient_id', imageSize: 48 },
      uploadChunkSize: 1024 * 1024,
      backend: 'auto',
    });
    const keys = await loadPartyKeys(home);
    expect(toBase64(keys.signing.publicKey)).toBe(toBase64(res.keys.signing.publicKey));
    expect(toBase64(keys.box.secretKey)).toBe(toBase64(res.keys.box.secretKey));
  });

  it('refuses to overwrite existing keys without force, replaces them with force', async () => {
    const home = await tempHome();
    const first = await initAgentHome({ home, data: { path: '/data' } });
    await expect(initAgentHome({ home, data: { path: '/data' } })).rejects.toMatchObject({
      code: 'AGENT_CONFIG_INVALID',
    });
    expect(toBase64((await loadPartyKeys(home)).signing.publicKey)).toBe(
      toBase64(first.keys.signing.publicKey),
    );
    const secretBefore = await loadPseudonymSecret(home);
    const second = await initAgentHome({ home, data: { path: '/data' }, force: true });
    expect(toBase64((await loadPartyKeys(home)).signing.publicKey)).toBe(
      toBase64(second.keys.signing.publicKey),
    );
    expect(toBase64(second.keys.signing.publicKey)).not.toBe(toBase64(first.keys.signing.publicKey));
    expect(toBase64(await loadPseudonymSecret(home))).not.toBe(toBase64(secretBefore));
  });

  it('refuses a keys file other users can read', async () => {
    const home = await tempHome();
    await initAgentHome({ home, data: { path: '/data' } });
    await chmod(agentPaths(home).keys, 0o644);
    await expect(loadPartyKeys(home)).rejects.toThrow(/accessible by other users \(mode 644\)/);
  });
});

describe('config validation', () => {
  const valid = {
    configVersion: 1,
    siteId: null,
    siteName: null,
    coordinatorUrl: null,
    coordinator: null,
    data: { path: '/data' },
  };

  it('names the bad field', () => {
    expect(() => parseAgentConfig({ ...valid, data: { path: '/data', imageSize: 4 } })).toThrow(
      /^config\.json: data\.imageSize: /,
    );
    expect(() => parseAgentConfig({ ...valid, uploadChunkSize: 'big' })).toThrow(/uploadChunkSize/);
    expect(() => parseAgentConfig({ ...valid, extra: 1 })).toThrow(/Unrecognized key/);
    expect(codeOf(() => parseAgentConfig({ ...valid, backend: 'gpu' }))).toBe('AGENT_CONFIG_INVALID');
    expect(() => parseAgentConfig({ ...valid, trainWorkers: 0 })).toThrow(/^config\.json: trainWorkers: /);
    expect(parseAgentConfig({ ...valid, trainWorkers: 2 }).trainWorkers).toBe(2);
  });

  it('rejects a half-enrolled config and requires enrollment to run', () => {
    expect(() => parseAgentConfig({ ...valid, siteId: 'site-1' })).toThrow(/must all be set/);
    const c = parseAgentConfig(valid);
    expect(codeOf(() => requireEnrolled(c))).toBe('AGENT_NOT_ENROLLED');
  });

  it('round-trips an enrolled config', async () => {
    const home = await tempHome();
    await initAgentHome({ home, data: { path: '/data' } });
    const k = generatePartyKeys();
    const coordinator = {
      keyId: 'abcd',
      signingPublicKey: toBase64(k.signing.publicKey),
      boxPublicKey: toBase64(k.box.publicKey),
      fingerprint: 'ab12 cd34',
    };
    const config = {
      ...(await loadAgentConfig(home)),
      siteId: 'site-1',
      siteName: 'Hospital A',
      coordinatorUrl: 'http://localhost:3000',
      coordinator,
    };
    await saveAgentConfig(home, config);
    expect(await mode(agentPaths(home).config)).toBe(0o600);
    expect(requireEnrolled(await loadAgentConfig(home)).coordinator).toEqual(coordinator);
  });

  it('reports a missing home as not initialised', async () => {
    const home = await tempHome();
    await expect(loadAgentConfig(home)).rejects.toThrow(/config\.json not found .*fedssl-agent init/);
  });

  it('rejects invalid JSON with the file name', async () => {
    const home = await tempHome();
    await initAgentHome({ home, data: { path: '/data' } });
    await writeFile(agentPaths(home).config, '{ nope');
    await expect(loadAgentConfig(home)).rejects.toThrow(/config\.json is not valid JSON/);
  });
});

describe('keys file', () => {
  it('round-trips and detects a public key that does not match', () => {
    const keys = generatePartyKeys();
    const text = encodeKeysFile(keys);
    expect(toBase64(decodeKeysFile(text).box.publicKey)).toBe(toBase64(keys.box.publicKey));
    const other = generatePartyKeys();
    const tampered = JSON.parse(text) as { signing: { publicKey: string } };
    tampered.signing.publicKey = toBase64(other.signing.publicKey);
    expect(() => decodeKeysFile(JSON.stringify(tampered))).toThrow(
      'keys.json: signing.publicKey does not match signing.secretKey',
    );
  });
});

describe('resolveAgentHome', () => {
  it('prefers the option, then FEDSSL_AGENT_HOME, then ./fedssl-agent', () => {
    expect(resolveAgentHome('/x', { FEDSSL_AGENT_HOME: '/y' })).toBe('/x');
    expect(resolveAgentHome(undefined, { FEDSSL_AGENT_HOME: '/y' })).toBe('/y');
    expect(resolveAgentHome(undefined, {})).toBe(resolve('fedssl-agent'));
  });
});
