import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { tinyModelConfig, trainingConfigSchema } from '@fedssl/shared/model';
import { Database } from '../store/database';
import { RunRepository } from './run.repository';
import { parseRunConfig } from './run-config';
import type { RunRecord, TaskRow } from './run.types';

const config = parseRunConfig({
  name: 'r',
  rounds: 2,
  minSites: 1,
  roundDeadlineSeconds: 60,
  strategy: 'fedavg',
  model: tinyModelConfig(32),
  training: trainingConfigSchema.parse({}),
  seed: 7,
});
const run: RunRecord = {
  id: 'run-1',
  name: 'r',
  state: 'created',
  config,
  currentRound: 0,
  initialModelVersion: null,
  latestModelVersion: null,
  createdAt: '2030-01-01T00:00:00.000Z',
  updatedAt: '2030-01-01T00:00:00.000Z',
  reason: null,
};
const task = (id: string, siteId: string): TaskRow => ({
  id,
  runId: 'run-1',
  round: 1,
  attempt: 1,
  siteId,
  nonce: 'n',
  modelVersion: 'run-1.r0',
  modelHash: 'h',
  issuedAt: 'i',
  deadline: 'd',
  state: 'offered',
  reason: null,
  answeredAt: null,
  signedTask: { signature: 's' } as unknown as TaskRow['signedTask'],
});

describe('RunRepository', () => {
  let db: Database;
  let repo: RunRepository;
  beforeEach(() => {
    db = Database.open(':memory:');
    repo = new RunRepository(db);
  });
  afterEach(() => db.close());

  it('round-trips runs with their config and applies its migration once', () => {
    repo.insertRun(run);
    expect(repo.getRun('run-1')).toEqual(run);
    repo.updateRun(
      'run-1',
      { state: 'running', currentRound: 1, latestModelVersion: 'run-1.r0' },
      '2030-01-02T00:00:00.000Z',
    );
    const got = repo.getRun('run-1')!;
    expect(got.state).toBe('running');
    expect(got.currentRound).toBe(1);
    expect(got.latestModelVersion).toBe('run-1.r0');
    expect(got.updatedAt).toBe('2030-01-02T00:00:00.000Z');
    expect(repo.listRuns('running').map((r) => r.id)).toEqual(['run-1']);
    expect(repo.listRuns('created')).toEqual([]);
    new RunRepository(db); // re-opening must not re-run the migration
    expect(db.appliedVersions('runs')).toEqual([1]);
  });

  it('keeps round attempts, tasks in siteId order, and answers a task only once', () => {
    repo.insertRun(run);
    const base = {
      runId: 'run-1',
      round: 1,
      state: 'open' as const,
      startedAt: 's',
      deadline: null,
      publishedAt: null,
      baseModelVersion: 'run-1.r0',
      baseModelSha256: 'x',
      modelVersion: null,
      modelSha256: null,
      reason: null,
    };
    repo.insertRound({ ...base, attempt: 1 });
    repo.insertRound({ ...base, attempt: 2 });
    expect(repo.latestRound('run-1')?.attempt).toBe(2);
    repo.updateRound('run-1', 1, 1, { state: 'failed', reason: 'too few' });
    expect(repo.getRound('run-1', 1, 1)).toMatchObject({ state: 'failed', reason: 'too few' });
    repo.insertTask(task('t-b', 'site-b'));
    repo.insertTask(task('t-a', 'site-a'));
    expect(repo.listTasks('run-1', 1, 1).map((t) => t.siteId)).toEqual(['site-a', 'site-b']);
    expect(repo.answerTask('t-a', 'rejected', 'bad', 'now')).toBe(true);
    expect(repo.answerTask('t-a', 'accepted', null, 'later')).toBe(false);
    expect(repo.getTask('t-a')).toMatchObject({ state: 'rejected', reason: 'bad', answeredAt: 'now' });
    expect(() => repo.insertTask(task('t-c', 'site-a'))).toThrow(/UNIQUE/);
  });

  it('lists accepted updates in siteId order', () => {
    repo.insertRun(run);
    repo.insertRound({
      runId: 'run-1',
      round: 1,
      attempt: 1,
      state: 'training',
      startedAt: 's',
      deadline: 'd',
      publishedAt: null,
      baseModelVersion: 'run-1.r0',
      baseModelSha256: 'x',
      modelVersion: null,
      modelSha256: null,
      reason: null,
    });
    for (const s of ['site-c', 'site-a']) {
      repo.insertTask(task(`t-${s}`, s));
      repo.insertUpdate({
        id: `u-${s}`,
        taskId: `t-${s}`,
        runId: 'run-1',
        round: 1,
        attempt: 1,
        siteId: s,
        exampleCount: 3,
        metrics: { loss: 1.5 },
        envelopePath: 'e',
        headerPath: 'h',
        receivedAt: 'r',
      });
    }
    const ups = repo.listUpdates('run-1', 1, 1);
    expect(ups.map((u) => u.siteId)).toEqual(['site-a', 'site-c']);
    expect(ups[0]!.metrics).toEqual({ loss: 1.5 });
    expect(repo.getUpdateByTask('t-site-c')?.id).toBe('u-site-c');
    expect(repo.countUpdates()).toBe(2);
  });
});
