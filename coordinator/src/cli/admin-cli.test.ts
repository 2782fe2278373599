import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { sha256Hex } from '@fedssl/shared/crypto';
import { tinyModelConfig } from '@fedssl/shared/model';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { ModelStoreService, type PublishArgs } from '../models/model-store.service';
import { runAdminCli } from './admin-cli';
import type { CliIo } from './io';
import { runAdminCliAt } from '../testing/admin-cli';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

function capture(): CliIo & { out: string; err: string } {
  const io = {
    out: '',
    err: '',
    stdout: (t: string) => {
      io.out += t;
    },
    stderr: (t: string) => {
      io.err += t;
    },
  };
  return io;
}

describe('fedssl-admin against an in-process coordinator', () => {
  let dir: string;
  let running: TestCoordinator;
  let token: string;
  let viewerToken: string;
  let offline: ModelStoreService;
  const silent = pino({ level: 'silent' });

  const cli = (...argv: string[]) => runAdminCliAt(running.url, token, argv);
  const publishArgs = (version: string): PublishArgs => ({
    version,
    runId: null,
    round: 0,
    model: tinyModelConfig(32),
    weights: [{ name: 'w', shape: [3], data: Float32Array.from([1, 2, 3]) }],
    parentVersion: null,
    parentSha256: null,
    sites: [],
    strategy: 'fedavg',
  });

  beforeAll(async () => {
    running = await startTestCoordinator({ prefix: 'fedssl-cli-', logger: silent });
    dir = running.dataDir;
    const config = loadConfig({ FEDSSL_DATA_DIR: dir, FEDSSL_PORT: '0' });
    token = await running.token('admin', 'cli');
    viewerToken = await running.token('viewer');
    running.app.get(ModelStoreService).publish(publishArgs('m.r0'));
    // A second store over the same directory, to plant versions the server reads lazily from disk.
    offline = new ModelStoreService(
      config,
      running.app.get(CoordinatorKeysService),
      { now: () => Date.now() },
      silent,
    );
  });
  afterAll(async () => {
    await running?.close();
  });

  it('admin-tokens create --expires-in, list and revoke', async () => {
    const made = await cli(
      '--json',
      'admin-tokens',
      'create',
      '--name',
      'ci',
      '--role',
      'viewer',
      '--expires-in',
      '3600',
    );
    expect(made.code).toBe(0);
    const t = JSON.parse(made.out) as { id: string; token: string; expiresAt: string };
    expect(Date.parse(t.expiresAt) - Date.now()).toBeGreaterThan(3500_000);
    const list = await cli('admin-tokens', 'list');
    expect(list.out).toContain(`${t.id}  ci  viewer  expires=${t.expiresAt}\n`);
    expect(list.out).toMatch(/ {2}cli {2}admin {2}expires=never\n/);
    const revoked = await cli('admin-tokens', 'revoke', t.id);
    expect(revoked.out).toMatch(new RegExp(`^${t.id} {2}ci {2}viewer {2}expires=.* {2}revoked `));
    const bad = await cli('admin-tokens', 'create', '--name', 'x', '--role', 'root');
    expect(bad.code).not.toBe(0);
  });

  it('pulls a model after checking fingerprint, signature and hash', async () => {
    const out = join(dir, 'pull-ok');
    const keys = running.app.get(CoordinatorKeysService).publicKeys();
    const r = await cli(
      'models',
      'pull',
      '--version',
      'm.r0',
      '--out',
      out,
      '--fingerprint',
      keys.fingerprint,
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const weights = readFileSync(join(out, 'weights.fsw'));
    expect(weights).toEqual(readFileSync(running.app.get(ModelStoreService).weightsPath('m.r0')));
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest).toEqual(running.app.get(ModelStoreService).getManifest('m.r0'));
    expect(manifest.manifest.weightsSha256).toBe(sha256Hex(new Uint8Array(weights)));
    expect(readdirSync(out).sort()).toEqual([
      'MODEL_CARD.md',
      'manifest.json',
      'model-card.json',
      'weights.fsw',
    ]);
  });

  it('accepts the fingerprint in any case and spacing', async () => {
    const fp = running.app.get(CoordinatorKeysService).publicKeys().fingerprint;
    const r = await cli(
      'models',
      'pull',
      '--version',
      'm.r0',
      '--out',
      join(dir, 'pull-fp-loose'),
      '--fingerprint',
      fp.replace(/ /g, '').toUpperCase(),
    );
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
  });

  it('warns when the coordinator key is not pinned', async () => {
    const r = await cli('models', 'pull', '--version', 'm.r0', '--out', join(dir, 'pull-unpinned'));
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/^warning: coordinator key not pinned; its fingerprint is "[0-9a-f ]+"/);
  });

  it('refuses a tampered manifest and writes nothing', async () => {
    offline.publish(publishArgs('m.tampered'));
    const file = join(dir, 'models', 'm.tampered', 'manifest.json');
    const signed = JSON.parse(readFileSync(file, 'utf8'));
    signed.manifest.round = 7; // still schema-valid, no longer what was signed
    writeFileSync(file, JSON.stringify(signed));
    const out = join(dir, 'pull-tampered');
    const r = await cli('models', 'pull', '--version', 'm.tampered', '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      'error: MANIFEST_SIGNATURE_INVALID: manifest of m.tampered is not signed by the coordinator key; nothing written\n',
    );
    expect(existsSync(out)).toBe(false);
  });

  it('refuses tampered weights and writes nothing', async () => {
    offline.publish(publishArgs('m.badweights'));
    const file = join(dir, 'models', 'm.badweights', 'weights.fsw');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1]! ^= 0x40;
    writeFileSync(file, bytes);
    const out = join(dir, 'pull-badweights');
    const r = await cli('models', 'pull', '--version', 'm.badweights', '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^error: MODEL_HASH_MISMATCH: weights of m\.badweights do not match the signed manifest .*; nothing written\n$/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a coordinator whose fingerprint differs', async () => {
    const out = join(dir, 'pull-fp');
    const r = await cli('models', 'pull', '--version', 'm.r0', '--out', out, '--fingerprint', '0000 1111');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^error: COORDINATOR_FINGERPRINT_MISMATCH: coordinator key fingerprint is "[0-9a-f ]+", expected "0000 1111"/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('shows the server error code and message on HTTP errors', async () => {
    const r = await cli('models', 'pull', '--version', 'nope', '--out', join(dir, 'x'));
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      'error: MODEL_VERSION_NOT_FOUND: no published model version nope (HTTP 404 GET /models/nope)\n',
    );
    const io = capture();
    const code = await runAdminCli(['tokens', 'create', '--site', 'S'], {
      io,
      env: { FEDSSL_URL: running.url, FEDSSL_ADMIN_TOKEN: viewerToken },
    });
    expect(code).toBe(1);
    expect(io.err).toBe(
      'error: ADMIN_FORBIDDEN: role viewer may not do this; requires admin or higher (HTTP 403 POST /enrollment-tokens)\n',
    );
  });

  it('creates enrollment tokens and lists sites, in text and JSON', async () => {
    const created = await cli('--json', 'tokens', 'create', '--site', 'Hospital A', '--expires-in', '600');
    expect(created.code).toBe(0);
    const body = JSON.parse(created.out);
    expect(body).toMatchObject({ siteName: 'Hospital A' });
    expect(body.token).toMatch(/^fse_/);
    const list = await cli('sites', 'list');
    expect(list.out).toBe(`${body.siteId}  Hospital A  pending  backend=- examples=- lastSeen=-\n`);
    const revoked = await cli('sites', 'revoke', body.siteId, '--reason', 'test');
    expect(revoked.out).toMatch(new RegExp(`^revoked ${body.siteId} \\(Hospital A\\) at `));
    const models = await cli('--json', 'models', 'list');
    expect(
      JSON.parse(models.out).map((m: { manifest: { version: string } }) => m.manifest.version),
    ).toContain('m.r0');
  });

  it('lists enrollment tokens with their state and expires a pending one', async () => {
    const created = JSON.parse((await cli('--json', 'tokens', 'create', '--site', 'Hospital B')).out);
    const line = (state: string, expiresAt: string) =>
      `${created.siteId}  Hospital B  ${state}  expires=${expiresAt}\n`;
    expect((await cli('tokens', 'list')).out).toContain(line('pending', created.expiresAt));
    const expired = await cli('--json', 'tokens', 'expire', created.siteId);
    expect(expired.code).toBe(0);
    const body = JSON.parse(expired.out);
    expect(body).toMatchObject({ siteId: created.siteId, state: 'expired' });
    expect((await cli('tokens', 'list')).out).toContain(line('expired', body.expiresAt));
    const again = await cli('tokens', 'expire', created.siteId);
    expect([again.code, again.err]).toEqual([
      1,
      `error: ENROLLMENT_TOKEN_NOT_PENDING: the enrollment token of site ${created.siteId} is already used, expired or revoked (HTTP 409 POST /enrollment-tokens/${created.siteId}/expire)\n`,
    ]);
  });

  it('creates a run from flags and from a config file; shows the server validation error', async () => {
    const created = await cli(
      '--json',
      'runs',
      'create',
      '--name',
      'demo',
      '--rounds',
      '2',
      '--min-sites',
      '1',
      '--batch-size',
      '8',
      '--max-steps',
      '3',
      '--lambda',
      '0.25',
      '--seed',
      '7',
    );
    expect(created.err).toBe('');
    const run = JSON.parse(created.out);
    expect(run).toMatchObject({ name: 'demo', state: 'created' });
    expect(run.config).toMatchObject({
      rounds: 2,
      minSites: 1,
      roundDeadlineSeconds: 600,
      seed: 7,
      model: { arch: 'tiny', inputSize: 32 },
      training: { batchSize: 8, maxStepsPerRound: 3, metadataWeight: 0.25 },
    });
    const listed = await cli('runs', 'list');
    expect(listed.out).toContain(`${run.id}  demo  created  round 0/2`);

    const file = join(dir, 'run.json');
    writeFileSync(file, JSON.stringify({ ...run.config, name: 'from-file' }));
    const fromFile = await cli('runs', 'create', '--config', file);
    expect(fromFile.out).toMatch(/^created run \S+ \(from-file\) created\n$/);

    writeFileSync(file, JSON.stringify({ ...run.config, rounds: 0 }));
    const bad = await cli('runs', 'create', '--config', file);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(
      /^error: RUN_CONFIG_INVALID: rounds: Too small: expected number to be >=1 \(HTTP 400 POST \/runs\)\n$/,
    );

    const missing = await cli('runs', 'create', '--name', 'x');
    expect(missing.err).toBe(
      'error: RUN_CONFIG_INVALID: --rounds is required (or pass --config FILE.json)\n',
    );
  });

  it('reports an unreachable coordinator in one line', async () => {
    // A port that was just free: nothing listens there now.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const io = capture();
    const url = `http://127.0.0.1:${port}`;
    const code = await runAdminCli(['sites', 'list'], {
      io,
      env: { FEDSSL_URL: url, FEDSSL_ADMIN_TOKEN: token },
    });
    expect(code).toBe(1);
    expect(io.err).toBe(`error: COORDINATOR_UNREACHABLE: cannot reach ${url}: ECONNREFUSED\n`);
  });
});
