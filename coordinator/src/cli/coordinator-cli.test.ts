import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { followCoordinatorKeyChain } from '@fedssl/shared/crypto';
import { AuditLog } from '../audit/audit-log';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService, coordinatorKeysFile } from '../keys/coordinator-keys.service';
import { openStore } from '../store/open-store';

/** These run the compiled CLI (`npx tsc -b coordinator` first; `npm test` builds). */
const CLI = resolve(__dirname, '../../dist/cli/coordinator-cli.js');

describe('fedssl-coordinator (compiled, as a child process)', () => {
  const dirs: string[] = [];
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error(`${CLI} missing: run npx tsc -b coordinator`);
  });
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const dataDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'fedssl-ccli-'));
    dirs.push(d);
    return d;
  };

  it('bootstrap-admin prints only the token on stdout; a second call creates another and says so', () => {
    const env = { ...process.env, FEDSSL_DATA_DIR: dataDir(), FEDSSL_LOG_LEVEL: 'silent' };
    const run = () => spawnSyncText(['bootstrap-admin', '--name', 'first'], env);
    const a = run();
    expect(a.stdout).toMatch(/^fsa_[A-Za-z0-9_-]{43}\n$/);
    expect(a.stderr).toMatch(/^created admin token adm-[0-9a-f]{16}\n$/);
    const b = run();
    expect(b.stdout).toMatch(/^fsa_[A-Za-z0-9_-]{43}\n$/);
    expect(b.stdout).not.toBe(a.stdout);
    expect(b.stderr).toMatch(
      /^note: 1 active admin token\(s\) already existed; created another \(id adm-[0-9a-f]{16}\)\n$/,
    );
  });

  it('reports every invalid variable in one line and exits non-zero', () => {
    const r = spawnSyncText(['serve'], {
      ...process.env,
      FEDSSL_PORT: 'abc',
      FEDSSL_LOG_LEVEL: 'loud',
      FEDSSL_DATA_DIR: dataDir(),
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      'error: COORDINATOR_CONFIG_INVALID: invalid configuration: FEDSSL_PORT: expected integer 0–65535, got "abc"; ' +
        'FEDSSL_LOG_LEVEL: expected one of fatal|error|warn|info|debug|trace|silent, got "loud"\n',
    );
  });

  it('serve starts, answers, and stops cleanly on SIGTERM', async () => {
    const dir = dataDir();
    const token = spawnSyncText(['bootstrap-admin'], {
      ...process.env,
      FEDSSL_DATA_DIR: dir,
      FEDSSL_LOG_LEVEL: 'silent',
    }).stdout.trim();
    const child = spawn(process.execPath, [CLI, 'serve'], {
      env: { ...process.env, FEDSSL_DATA_DIR: dir, FEDSSL_PORT: '0', FEDSSL_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const lines = createInterface({ input: child.stdout });
    const logged: Record<string, unknown>[] = [];
    const listening = await new Promise<{ url: string; port: number }>((resolveLine, reject) => {
      child.on('exit', (code) => reject(new Error(`exited early with ${code}`)));
      lines.on('line', (l) => {
        const entry = JSON.parse(l) as Record<string, unknown>;
        logged.push(entry);
        if (entry['msg'] === 'coordinator listening')
          resolveLine(entry as unknown as { url: string; port: number });
      });
    });
    expect(listening.port).toBeGreaterThan(0);
    const health = await fetch(`${listening.url}/api/v1/healthz`);
    expect(await health.json()).toEqual({ status: 'ok' });
    const sites = await fetch(`${listening.url}/api/v1/sites`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(sites.status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(logged.some((e) => e['msg'] === 'coordinator stopped')).toBe(true);
    expect(JSON.stringify(logged)).not.toContain(token);
  });

  it('fingerprint prints the key fingerprint the service publishes; rotate-keys replaces it and audits', async () => {
    const dir = dataDir();
    // Port 0: no coordinator can be listening there, so the offline rotation may proceed.
    const env = { ...process.env, FEDSSL_DATA_DIR: dir, FEDSSL_PORT: '0', FEDSSL_LOG_LEVEL: 'silent' };
    // Never a fingerprint of keys made up on the spot (a mistyped data dir).
    const none = spawnSyncText(['fingerprint'], env);
    expect([none.status, none.stdout, none.stderr]).toEqual([
      1,
      '',
      `error: COORDINATOR_CONFIG_INVALID: no coordinator keys in ${dir}: check FEDSSL_DATA_DIR (the coordinator creates its keys when it first starts)\n`,
    ]);
    const keys = new CoordinatorKeysService(loadConfig(env), pino({ level: 'silent' }));
    const first = spawnSyncText(['fingerprint'], env);
    expect(first.status).toBe(0);
    expect(first.stdout).toBe(`${keys.publicKeys().fingerprint}\n`);
    expect(first.stderr).toBe(`coordinator key id ${keys.keyId}\n`);

    const rotated = spawnSyncText(['rotate-keys', '--grace-seconds', '60'], env);
    expect(rotated.status).toBe(0);
    const after = new CoordinatorKeysService(loadConfig(env), pino({ level: 'silent' }));
    expect(rotated.stdout).toBe(`${after.publicKeys().fingerprint}\n`);
    expect(rotated.stdout).not.toBe(first.stdout);
    expect(rotated.stderr).toMatch(
      new RegExp(
        `^rotated coordinator keys ${keys.keyId} -> ${after.keyId}; the old keys are accepted until \\S+Z\n$`,
      ),
    );
    expect(followCoordinatorKeyChain(keys.publicKeys(), after.keyChain().chain).keys).toEqual(
      after.publicKeys(),
    );
    const db = await openStore(loadConfig(env));
    try {
      const audit = await new AuditLog(db, { now: () => Date.now() }).init();
      expect((await audit.list()).map((e) => [e.action, e.target])).toEqual([
        ['coordinator.keys-rotated', after.keyId],
      ]);
    } finally {
      await db.close();
    }
  }, 90_000);

  it('rotate-keys refuses while a coordinator answers on the configured port', async () => {
    const server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const dir = dataDir();
      const env = {
        ...process.env,
        FEDSSL_DATA_DIR: dir,
        FEDSSL_PORT: String(port),
        FEDSSL_LOG_LEVEL: 'silent',
      };
      const keyFile = coordinatorKeysFile(dir);
      new CoordinatorKeysService(loadConfig(env), pino({ level: 'silent' })); // creates the keys
      const before = readFileSync(keyFile, 'utf8');
      const r = await spawnText(['rotate-keys'], env);
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        `error: COORDINATOR_CONFIG_INVALID: a coordinator is running on port ${port}; rotate its keys through the admin API (POST /api/v1/coordinator/keys/rotate, or fedssl-admin keys rotate) so it and its agents switch at once\n`,
      );
      expect(readFileSync(keyFile, 'utf8')).toBe(before);
    } finally {
      server.close();
    }
  }, 60_000);
});

/** Like spawnSyncText, but lets this process's event loop serve (the child talks to a server here). */
function spawnText(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ stdout: string; stderr: string; status: number | null }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolveRun({ stdout, stderr, status }));
  });
}

function spawnSyncText(
  args: string[],
  env: NodeJS.ProcessEnv,
): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}
