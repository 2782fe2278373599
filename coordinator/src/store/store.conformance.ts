import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { isFedsslError } from '@fedssl/shared/errors';
import { AdminTokenRepository } from '../admin/admin-token.repository';
import { AuditLog } from '../audit/audit-log';
import type { Clock } from '../config/clock';
import { RunRepository } from '../runs/run.repository';
import type { RunRecord, TaskRow } from '../runs/run.types';
import { SiteRepository } from '../sites/site.repository';
import type { SqlStore } from './sql-store';

const clock: Clock = { now: () => Date.parse('2025-01-02T03:04:05.000Z') };

function runRecord(id: string, createdAt: string): RunRecord {
  return {
    id,
    name: `run ${id}`,
    state: 'created',
    config: { name: `run ${id}`, rounds: 2 } as unknown as RunRecord['config'],
    currentRound: 0,
    initialModelVersion: null,
    latestModelVersion: null,
    createdAt,
    updatedAt: createdAt,
    reason: null,
  };
}

function task(id: string, runId: string, siteId: string): TaskRow {
  return {
    id,
    runId,
    round: 1,
    attempt: 1,
    siteId,
    nonce: `n-${id}`,
    modelVersion: `${runId}.r0`,
    modelHash: 'ab'.repeat(32),
    issuedAt: '2025-01-01T00:00:00.000Z',
    deadline: '2025-01-01T01:00:00.000Z',
    state: 'offered',
    reason: null,
    answeredAt: null,
    signedTask: { task: { taskId: id }, signature: 'sig' } as unknown as TaskRow['signedTask'],
  };
}

/**
 * The one behaviour every {@link SqlStore} back end must show (Flower `StateTest` style):
 * each repository's round trips, conditional updates, transactions and the audit chain.
 * `open` gives a fresh, empty store; `tamper(sql)` runs raw SQL behind the repositories' back.
 */
export function storeConformance(
  name: string,
  open: () => Promise<SqlStore>,
  dispose: (s: SqlStore) => Promise<void>,
) {
  describe(`store conformance: ${name}`, () => {
    let db: SqlStore;
    let sites: SiteRepository;
    let admins: AdminTokenRepository;
    let runs: RunRepository;
    let audit: AuditLog;
    beforeAll(async () => {
      db = await open();
      sites = await new SiteRepository(db).init();
      admins = await new AdminTokenRepository(db).init();
      runs = await new RunRepository(db).init();
      audit = await new AuditLog(db, clock).init();
    });
    afterAll(async () => {
      if (db) await dispose(db);
    });

    it('records each migration once and re-running is a no-op', async () => {
      expect(await db.appliedVersions('sites')).toEqual([1, 2]);
      await new SiteRepository(db).init();
      expect(await db.appliedVersions('sites')).toEqual([1, 2]);
      expect(await db.appliedVersions('audit')).toEqual([1]);
    });

    it('sites and enrollment tokens: insert, look up, use a token once, enroll, report, revoke', async () => {
      await sites.insertPending('site-1', 'St Mary', '2025-01-01T00:00:00.000Z');
      await sites.insertToken({
        tokenHash: 'h1',
        siteId: 'site-1',
        createdAt: '2025-01-01T00:00:00.000Z',
        expiresAt: '2025-01-02T00:00:00.000Z',
      });
      expect(await sites.getByName('St Mary')).toMatchObject({
        id: 'site-1',
        status: 'pending',
        signingPublicKey: '',
      });
      expect(await sites.getToken('h1')).toEqual({
        tokenHash: 'h1',
        siteId: 'site-1',
        createdAt: '2025-01-01T00:00:00.000Z',
        expiresAt: '2025-01-02T00:00:00.000Z',
        usedAt: null,
      });
      expect(await sites.markTokenUsed('h1', '2025-01-01T01:00:00.000Z')).toBe(true);
      expect(await sites.markTokenUsed('h1', '2025-01-01T02:00:00.000Z')).toBe(false);
      expect((await sites.getToken('h1'))?.usedAt).toBe('2025-01-01T01:00:00.000Z');
      await sites.setEnrolled(
        'site-1',
        { signingPublicKey: 'SK', boxPublicKey: 'BK', agentVersion: '1.0' },
        't1',
      );
      await sites.setStatus('site-1', { lastSeenAt: 't2', exampleCount: 42, backend: 'wasm' });
      await sites.setStatus('site-1', { lastSeenAt: 't3' }); // keeps the earlier values
      expect(await sites.getBySigningKey('SK')).toMatchObject({
        id: 'site-1',
        status: 'enrolled',
        exampleCount: 42,
        backend: 'wasm',
        lastSeenAt: 't3',
        agentVersion: '1.0',
      });
      await expect(sites.insertPending('site-2', 'St Mary', 't')).rejects.toThrow(); // names are unique
      // Key history: the current key last; a rotation retires it with a grace period.
      await sites.insertKey({
        siteId: 'site-1',
        keyId: 'k1',
        signingPublicKey: 'SK',
        boxPublicKey: 'BK',
        createdAt: 't1',
      });
      await sites.retireKey('site-1', 'k1', 't5', 't6');
      await sites.insertKey({
        siteId: 'site-1',
        keyId: 'k2',
        signingPublicKey: 'SK2',
        boxPublicKey: 'BK2',
        createdAt: 't5',
      });
      await sites.setCurrentKeys('site-1', 'SK2', 'BK2');
      await expect(
        sites.insertKey({
          siteId: 'site-1',
          keyId: 'k3',
          signingPublicKey: 'SK',
          boxPublicKey: 'B',
          createdAt: 't7',
        }),
      ).rejects.toThrow(); // a key is registered once
      expect(await sites.siteOfKey('SK')).toBe('site-1');
      expect(await sites.siteOfKey('nope')).toBeUndefined();
      expect(await sites.get('site-1')).toMatchObject({
        signingPublicKey: 'SK2',
        boxPublicKey: 'BK2',
        keys: [
          {
            keyId: 'k1',
            signingPublicKey: 'SK',
            boxPublicKey: 'BK',
            createdAt: 't1',
            retiredAt: 't5',
            validUntil: 't6',
          },
          {
            keyId: 'k2',
            signingPublicKey: 'SK2',
            boxPublicKey: 'BK2',
            createdAt: 't5',
            retiredAt: null,
            validUntil: null,
          },
        ],
      });
      expect((await sites.list())[0]?.keys.map((k) => k.keyId)).toEqual(['k1', 'k2']);
      await sites.setRevoked('site-1', 'lost laptop', 't4');
      expect((await sites.get('site-1'))?.status).toBe('revoked');
      expect((await sites.list()).map((s) => s.id)).toEqual(['site-1']);
      expect(await sites.get('nope')).toBeUndefined();
    });

    it('admin tokens: insert, find by hash, touch, revoke once', async () => {
      await admins.insert({ id: 'adm-1', name: 'root', role: 'admin', tokenHash: 'th', createdAt: 't0' });
      expect(await admins.getByHash('th')).toEqual({
        id: 'adm-1',
        name: 'root',
        role: 'admin',
        createdAt: 't0',
        expiresAt: null,
        revokedAt: null,
        lastUsedAt: null,
      });
      await admins.insert({
        id: 'adm-3',
        name: 'ci',
        role: 'viewer',
        tokenHash: 'th3',
        createdAt: 't0',
        expiresAt: '2030-01-01T00:00:00.000Z',
      });
      expect(await admins.get('adm-3')).toMatchObject({ expiresAt: '2030-01-01T00:00:00.000Z' });
      await admins.touch('adm-1', 't1');
      expect(await admins.revoke('adm-1', 't2')).toBe(true);
      expect(await admins.revoke('adm-1', 't3')).toBe(false);
      expect(await admins.get('adm-1')).toMatchObject({ lastUsedAt: 't1', revokedAt: 't2' });
      await expect(
        admins.insert({
          id: 'adm-2',
          name: 'x',
          role: 'superuser' as 'admin',
          tokenHash: 'th2',
          createdAt: 't',
        }),
      ).rejects.toThrow();
    });

    it('runs, rounds, tasks and updates: round trips, compare-and-set, answered once', async () => {
      await runs.insertRun(runRecord('run-b', '2025-01-01T00:00:02.000Z'));
      await runs.insertRun(runRecord('run-a', '2025-01-01T00:00:01.000Z'));
      expect((await runs.listRuns()).map((r) => r.id)).toEqual(['run-a', 'run-b']);
      expect(await runs.transitionRun('run-a', ['created'], 'running', null, 't1')).toBe(true);
      expect(await runs.transitionRun('run-a', ['created'], 'running', null, 't2')).toBe(false);
      await runs.updateRun('run-a', { currentRound: 1, latestModelVersion: 'run-a.r0' }, 't3');
      expect(await runs.getRun('run-a')).toMatchObject({
        state: 'running',
        currentRound: 1,
        latestModelVersion: 'run-a.r0',
        updatedAt: 't3',
        config: { rounds: 2 },
      });
      expect((await runs.listRuns('running')).map((r) => r.id)).toEqual(['run-a']);

      await runs.insertRound({
        runId: 'run-a',
        round: 1,
        attempt: 1,
        state: 'open',
        startedAt: 't',
        deadline: null,
        publishedAt: null,
        baseModelVersion: 'run-a.r0',
        baseModelSha256: 'ab'.repeat(32),
        modelVersion: null,
        modelSha256: null,
        reason: null,
      });
      await runs.updateRound('run-a', 1, 1, { state: 'training', deadline: 'd' });
      expect(await runs.latestRound('run-a')).toMatchObject({ state: 'training', deadline: 'd' });
      await runs.insertTask(task('t-2', 'run-a', 'site-b'));
      await runs.insertTask(task('t-1', 'run-a', 'site-a'));
      expect((await runs.listTasks('run-a', 1, 1)).map((t) => t.siteId)).toEqual(['site-a', 'site-b']);
      expect((await runs.getTask('t-1'))?.signedTask).toEqual({ task: { taskId: 't-1' }, signature: 'sig' });
      expect((await runs.listOfferedTasks()).length).toBe(2);

      // An accepted update and its answer are one transaction: a failure leaves neither.
      await expect(
        runs.transaction(async () => {
          expect(await runs.answerTask('t-1', 'accepted', null, 'ta')).toBe(true);
          throw new Error('disk full');
        }),
      ).rejects.toThrow('disk full');
      expect((await runs.getTask('t-1'))?.state).toBe('offered');
      await runs.transaction(async () => {
        expect(await runs.answerTask('t-1', 'accepted', null, 'ta')).toBe(true);
        await runs.insertUpdate({
          id: 'u-1',
          taskId: 't-1',
          runId: 'run-a',
          round: 1,
          attempt: 1,
          siteId: 'site-a',
          exampleCount: 7,
          metrics: { loss: 0.25 },
          envelopePath: 'e',
          headerPath: 'h',
          receivedAt: 'ta',
        });
      });
      expect(await runs.answerTask('t-1', 'rejected', 'late', 'tb')).toBe(false);
      expect((await runs.getTask('t-1'))?.state).toBe('accepted');
      expect(await runs.getUpdateByTask('t-1')).toMatchObject({ exampleCount: 7, metrics: { loss: 0.25 } });
      expect(await runs.countUpdates()).toBe(1);
      expect((await runs.listUpdates('run-a', 1, 1)).map((u) => u.id)).toEqual(['u-1']);
      await expect(
        runs.insertUpdate({ ...(await runs.getUpdateByTask('t-1'))!, id: 'u-2' }),
      ).rejects.toThrow();
    });

    it('carried updates: an accepted update counts in a later attempt of its round, once per site', async () => {
      expect(await db.appliedVersions('runs')).toEqual([1, 2, 3]);
      const attempt2 = { ...(await runs.getRound('run-a', 1, 1))!, attempt: 2, state: 'open' as const };
      await runs.insertRound(attempt2);
      await runs.insertCarriedUpdate({
        runId: 'run-a',
        round: 1,
        attempt: 2,
        siteId: 'site-a',
        updateId: 'u-1',
        carriedAt: 'tc',
      });
      // The original row comes back, with the attempt that accepted it.
      expect(await runs.listCarriedUpdates('run-a', 1, 2)).toEqual([await runs.getUpdateByTask('t-1')]);
      expect((await runs.listCarriedUpdates('run-a', 1, 2))[0]).toMatchObject({ id: 'u-1', attempt: 1 });
      expect(await runs.listCarriedUpdates('run-a', 1, 1)).toEqual([]);
      expect(await runs.listUpdates('run-a', 1, 2)).toEqual([]);
      // Attempt 2 accepts its own update of another site: both count, in siteId order.
      await runs.insertTask({ ...task('t-3', 'run-a', 'site-0'), attempt: 2 });
      await runs.insertUpdate({
        id: 'u-3',
        taskId: 't-3',
        runId: 'run-a',
        round: 1,
        attempt: 2,
        siteId: 'site-0',
        exampleCount: 3,
        metrics: {},
        envelopePath: 'e3',
        headerPath: 'h3',
        receivedAt: 'tc',
      });
      expect((await runs.listRoundUpdates('run-a', 1, 2)).map((u) => [u.id, u.attempt])).toEqual([
        ['u-3', 2],
        ['u-1', 1],
      ]);
      expect((await runs.listRoundUpdates('run-a', 1, 1)).map((u) => u.id)).toEqual(['u-1']);
      // A site is carried at most once per attempt, only into an attempt that exists, only a stored update.
      const again = {
        runId: 'run-a',
        round: 1,
        attempt: 2,
        siteId: 'site-a',
        updateId: 'u-1',
        carriedAt: 'td',
      };
      await expect(runs.insertCarriedUpdate(again)).rejects.toThrow();
      await expect(runs.insertCarriedUpdate({ ...again, attempt: 9 })).rejects.toThrow();
      await expect(
        runs.insertCarriedUpdate({ ...again, siteId: 'site-z', updateId: 'u-none' }),
      ).rejects.toThrow();
      expect(await runs.listRoundUpdates('run-a', 1, 2)).toHaveLength(2);
    });

    it('transactions serialise: concurrent read-modify-write loses nothing', async () => {
      await audit.append('system', 'run.created', 'run-x', {});
      const before = await audit.count();
      await Promise.all(
        Array.from({ length: 10 }, (_v, i) => audit.append('system', 'run.started', `run-${i}`)),
      );
      expect(await audit.count()).toBe(before + 10);
      expect(await audit.verify()).toEqual({ ok: true, entries: before + 10 });
    });

    it('audit: chained entries, paging, and a tampered row is found at its seq', async () => {
      const first = await audit.list({ limit: 2 });
      expect(first[0]).toMatchObject({ seq: 1, prevHash: '0'.repeat(64) });
      expect(first[1]?.prevHash).toBe(first[0]?.hash);
      expect((await audit.list({ after: 1, limit: 1 }))[0]?.seq).toBe(2);
      const total = await audit.count();
      expect(total).toBeGreaterThan(3);
      const e3 = (await audit.list({ after: 2, limit: 1 }))[0]!;
      await db.execute("UPDATE audit_log SET target = 'run-evil' WHERE seq = $1", [3]);
      expect(await audit.verify()).toEqual({
        ok: false,
        entries: 2,
        firstBadSeq: 3,
        reason: 'entry 3 does not match its hash',
      });
      await db.execute('UPDATE audit_log SET target = $1 WHERE seq = $2', [e3.target, 3]);
      expect(await audit.verify()).toEqual({ ok: true, entries: total });
      await db.execute('DELETE FROM audit_log WHERE seq = $1', [3]);
      expect(await audit.verify()).toEqual({
        ok: false,
        entries: 2,
        firstBadSeq: 3,
        reason: 'entry 3 is missing (next stored entry is 4)',
      });
    });

    it('reports store errors as rejections, not crashes', async () => {
      await expect(db.query('SELECT * FROM no_such_table')).rejects.toThrow();
      expect(isFedsslError(new Error('x'))).toBe(false);
    });
  });
}
