import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

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
});

function spawnSyncText(
  args: string[],
  env: NodeJS.ProcessEnv,
): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}
