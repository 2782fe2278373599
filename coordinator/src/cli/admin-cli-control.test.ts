import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testRunBody } from '../runs/federation.fixture';
import { RunService } from '../runs/run.service';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { runAdminCliAt } from '../testing/admin-cli';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

describe('fedssl-admin runs pause|resume|cancel and audit list|verify', () => {
  let running: TestCoordinator;
  let token: string;

  const cli = (...argv: string[]) => runAdminCliAt(running.url, token, argv);

  beforeAll(async () => {
    running = await startTestCoordinator({ prefix: 'fedssl-cli-ctl-' });
    token = await running.token('admin', 'cli');
  });
  afterAll(async () => {
    await running?.close();
  });

  it('steers a run and shows the server error for an illegal transition', async () => {
    const run = await running.app.get(RunService).create(testRunBody({ minSites: 1 }));
    expect(await cli('runs', 'start', run.id)).toEqual({ code: 0, out: `run ${run.id} running\n`, err: '' });
    expect(await cli('runs', 'pause', run.id)).toEqual({ code: 0, out: `run ${run.id} paused\n`, err: '' });
    const again = await cli('runs', 'pause', run.id);
    expect(again.code).toBe(1);
    expect(again.err).toContain(
      `RUN_INVALID_STATE: run ${run.id} is paused; only a running run can be paused`,
    );
    expect(await cli('runs', 'resume', run.id)).toEqual({ code: 0, out: `run ${run.id} running\n`, err: '' });
    expect(await cli('runs', 'cancel', run.id)).toEqual({
      code: 0,
      out: `run ${run.id} cancelled\n`,
      err: '',
    });
  });

  it('lists and verifies the audit log; a tampered log exits 2 naming the entry', async () => {
    const list = await cli('audit', 'list', '--limit', '3');
    expect(list.code).toBe(0);
    expect(
      list.out
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('  ').slice(2)),
    ).toEqual([
      ['system', 'admin-token.created', expect.stringMatching(/^adm-/)],
      ['system', 'run.created', expect.stringMatching(/^run-/)],
      [expect.stringMatching(/^admin:adm-/), 'run.started', expect.stringMatching(/^run-/)],
    ]);
    const ok = await cli('audit', 'verify');
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^audit log intact: \d+ entries\n$/);
    await running.app
      .get<symbol, SqlStore>(SQL_STORE)
      .execute('UPDATE audit_log SET details = $1 WHERE seq = 3', ['{"injected":1}']);
    expect(await cli('audit', 'verify')).toEqual({
      code: 2,
      out: 'audit log BROKEN at entry 3: entry 3 does not match its hash\n',
      err: '',
    });
  });
});
