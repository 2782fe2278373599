import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/src/main';
import { EnrollmentService } from '../../coordinator/src/sites/enrollment.service';
import { enrollCommand, initCommand } from '../../site-agent/src/cli/commands';
import { doctorCommand, runDoctor, type DoctorCheck } from '../../site-agent/src/cli/doctor';

/**
 * `fedssl-agent doctor` against a live in-process coordinator: an initialised, enrolled
 * agent passes every required check; missing data, loose key permissions, a skewed clock
 * and an unreachable coordinator each fail with their own fix (a refused connection named as such).
 */
describe('fedssl-agent doctor', () => {
  let root: string;
  let home: string;
  let coordinator: RunningCoordinator;
  const logger = pino({ level: 'silent' });
  const silentIo = { out: () => undefined, err: () => undefined };
  const byName = (checks: DoctorCheck[]) => Object.fromEntries(checks.map((c) => [c.name, c]));

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-doctor-'));
    const data = path.join(root, 'data');
    await mkdir(data);
    for (const i of [0, 1, 2]) {
      await sharp(Buffer.alloc(16 * 16, 40 * i), { raw: { width: 16, height: 16, channels: 1 } })
        .png()
        .toFile(path.join(data, `img-${i}.png`));
    }
    coordinator = await startCoordinator(
      {
        host: '127.0.0.1',
        port: 0,
        dataDir: path.join(root, 'coordinator'),
        databaseUrl: null,
        logLevel: 'silent',
      },
      logger,
    );
    home = path.join(root, 'agent');
    await initCommand({ home, data }, silentIo);
    const issued = await coordinator.app.get(EnrollmentService).issueToken('Doctor site', 600);
    await enrollCommand({ home, coordinator: coordinator.url, token: issued.token }, silentIo);
  });
  afterAll(async () => {
    await coordinator?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('passes every required check on a healthy enrolled agent', async () => {
    const lines: string[] = [];
    const code = await doctorCommand(
      { home, logger, backend: 'wasm' },
      { out: (l) => lines.push(l), err: (l) => lines.push(l) },
    );
    const checks = await runDoctor({ home, logger, backend: 'wasm' });
    const c = byName(checks);
    expect(code).toBe(0);
    expect(Object.keys(c)).toEqual([
      'config',
      'data',
      'backend',
      'disk',
      'site keys',
      'pseudonym secret',
      'enrolled, coordinator keys pinned',
      'coordinator reachable',
      'clock skew',
      'coordinator keys match the pinned ones',
    ]);
    expect(c.data).toMatchObject({ status: 'pass', detail: '3 images readable, 0 identified patients' });
    // No GPU here: a warning with the fix, not a failure.
    expect(c.backend).toMatchObject({
      status: 'warn',
      detail: 'wasm on CPU (no GPU backend); native libtensorflow not loaded',
    });
    for (const name of [
      'config',
      'disk',
      'site keys',
      'pseudonym secret',
      'coordinator reachable',
      'clock skew',
    ])
      expect(c[name]!.status).toBe('pass');
    expect(c['coordinator keys match the pinned ones']!.status).toBe('pass');
    expect(lines.at(-1)).toBe('All required checks passed.');
    expect(lines.some((l) => l.startsWith('WARN  backend'))).toBe(true);
  });

  it('fails missing data, readable keys and a skewed clock, each with its fix', async () => {
    await chmod(path.join(home, 'keys.json'), 0o644);
    try {
      const checks = await runDoctor({
        home,
        logger,
        backend: 'wasm',
        data: path.join(root, 'no-such-folder'),
        now: () => Date.now() - 120_000,
      });
      const c = byName(checks);
      expect(c.data!.status).toBe('fail');
      expect(c.data!.detail).toMatch(/not found or not readable/);
      expect(c['site keys']).toMatchObject({
        status: 'fail',
        fix: `chmod 600 ${path.join(home, 'keys.json')}`,
      });
      expect(c['clock skew']!.status).toBe('fail');
      expect(c['clock skew']!.detail).toMatch(/^this clock is 1(19|20|21) s behind the coordinator$/);
    } finally {
      await chmod(path.join(home, 'keys.json'), 0o600);
    }
  });

  it('fails when the coordinator is unreachable', async () => {
    const unreachable: typeof fetch = () => Promise.reject(new Error('connect ECONNREFUSED'));
    const lines: string[] = [];
    const code = await doctorCommand(
      { home, logger, backend: 'wasm', fetchImpl: unreachable },
      { out: (l) => lines.push(l), err: (l) => lines.push(l) },
    );
    expect(code).toBe(1);
    const checks = await runDoctor({ home, logger, backend: 'wasm', fetchImpl: unreachable });
    const c = byName(checks);
    expect(c['coordinator reachable']).toMatchObject({
      status: 'fail',
      fix: 'check the URL, DNS, proxy and that outbound HTTPS to the coordinator is allowed',
    });
    expect(c['clock skew']).toBeUndefined();
    expect(lines.at(-1)).toBe('Some checks failed.');
  });

  it('says why the coordinator cannot be reached and what to check (a real refused connection)', async () => {
    // A port nothing listens on: open one, then close it.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused: typeof fetch = (input, init) =>
      fetch(String(input).replace(coordinator.url, `http://127.0.0.1:${port}`), init);
    const c = byName(await runDoctor({ home, logger, backend: 'wasm', fetchImpl: refused }));
    expect(c['coordinator reachable']).toEqual({
      name: 'coordinator reachable',
      status: 'fail',
      detail: `cannot reach ${coordinator.url}/api/v1/healthz: connection refused by ${new URL(coordinator.url).host} (ECONNREFUSED)`,
      fix: 'check the port in the coordinator URL, and ask the consortium admin whether the coordinator is running',
    });
  });

  it('fails every check that needs a config when the home is empty', async () => {
    const empty = path.join(root, 'empty');
    await mkdir(empty);
    const c = byName(await runDoctor({ home: empty, logger, backend: 'wasm' }));
    expect(c.config).toMatchObject({
      status: 'fail',
      fix: 'run `fedssl-agent init --home <dir> --data <path>` first',
    });
    expect(c['site keys']!.status).toBe('fail');
    expect(c['enrolled, coordinator keys pinned']!.status).toBe('fail');
  });
});
