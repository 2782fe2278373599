import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fromBase64, verifySignedModelManifest } from '@fedssl/shared/crypto';
import { isFedsslError } from '@fedssl/shared/errors';
import { tinyModelConfig } from '@fedssl/shared/model';
import { AuditLog } from '../audit/audit-log';
import { loadConfig, type CoordinatorConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import type { RoundEngineEvents } from '../runs/round-engine';
import { RunRepository } from '../runs/run.repository';
import type { RunRecord, RunState } from '../runs/run.types';
import { SqliteStore } from '../store/sqlite-store';
import { ModelMarksRepository } from './model-marks.repository';
import { ModelStoreService } from './model-store.service';
import { RetentionService } from './retention.service';

const silent = pino({ level: 'silent' });
const clock = { now: () => Date.parse('2026-02-01T00:00:00.000Z') };
const weights = [{ name: 'enc/w', shape: [4], data: Float32Array.of(1, 2, 3, 4) }];

function run(id: string, state: RunState, latest: string | null): RunRecord {
  return {
    id,
    name: id,
    state,
    config: { name: id } as unknown as RunRecord['config'],
    currentRound: 0,
    initialModelVersion: null,
    latestModelVersion: latest,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    reason: null,
  };
}

describe('RetentionService (model store + SQLite)', () => {
  let dir: string;
  let db: SqliteStore;
  let config: CoordinatorConfig;
  let models: ModelStoreService;
  let keys: CoordinatorKeysService;
  let runs: RunRepository;
  let marks: ModelMarksRepository;
  let audit: AuditLog;
  let events: EventEmitter<RoundEngineEvents>;
  let retention: RetentionService;

  const publish = (runId: string, round: number) =>
    models.publish({
      version: `${runId}.r${round}`,
      runId,
      round,
      model: tinyModelConfig(32),
      weights,
      parentVersion: round > 0 ? `${runId}.r${round - 1}` : null,
      parentSha256: null,
      sites: [],
      strategy: 'fedavg',
    });

  const start = async (env: Record<string, string> = {}) => {
    config = loadConfig({ FEDSSL_DATA_DIR: dir, ...env });
    retention = new RetentionService({
      config,
      models,
      marks,
      runs,
      audit,
      clock,
      logger: silent,
      engineEvents: events,
    });
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-retention-'));
    db = await SqliteStore.open(join(dir, 'fedssl.sqlite'));
    config = loadConfig({ FEDSSL_DATA_DIR: dir });
    keys = new CoordinatorKeysService(config, silent);
    models = new ModelStoreService(config, keys, clock, silent);
    runs = await new RunRepository(db).init();
    marks = await new ModelMarksRepository(db).init();
    audit = await new AuditLog(db, clock).init();
    events = new EventEmitter<RoundEngineEvents>();
    for (let r = 0; r <= 4; r++) publish('done', r);
    for (let r = 0; r <= 3; r++) publish('live', r);
    await runs.insertRun(run('done', 'completed', 'done.r4'));
    await runs.insertRun(run('live', 'running', 'live.r3'));
    // live's round 4 is training from live.r3; an older round 2 attempt failed (not a reference).
    for (const [round, state, base] of [
      [2, 'failed', 'live.r1'],
      [4, 'training', 'live.r3'],
    ] as const) {
      await runs.insertRound({
        runId: 'live',
        round,
        attempt: 1,
        state,
        startedAt: '2026-01-01T00:00:00.000Z',
        deadline: null,
        publishedAt: null,
        baseModelVersion: base,
        baseModelSha256: 'a'.repeat(64),
        modelVersion: null,
        modelSha256: null,
        reason: null,
      });
    }
  });
  afterEach(async () => {
    retention?.stop();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a dry run (the default) reports and deletes nothing; without a retain it refuses', async () => {
    await start();
    await expect(retention.prune({ dryRun: true }, 'admin:a')).rejects.toThrow(
      'no retention configured: set FEDSSL_RETAIN_VERSIONS or pass "retain" (versions to keep per run, ≥ 1)',
    );
    const r = await retention.prune({ dryRun: true, retain: 2 }, 'admin:a');
    expect(r.pruned).toEqual(['done.r0', 'done.r1', 'done.r2', 'live.r0', 'live.r1']);
    expect(r.bytesFreed).toBe(5 * models.requireManifest('done.r0').manifest.weightsBytes);
    expect(models.list().every((m) => models.hasWeights(m.manifest.version))).toBe(true);
    expect(await marks.list()).toEqual([]);
    expect(await audit.count()).toBe(0);
  });

  it('applying deletes weights and exports, keeps signed manifests, marks rows and audits each version', async () => {
    await start();
    mkdirSync(models.exportsDir('done.r0'));
    writeFileSync(join(models.exportsDir('done.r0'), 'model.safetensors'), 'x'.repeat(10));
    await retention.setKeep('done.r1', true, 'admin:a');
    const size = models.requireManifest('done.r0').manifest.weightsBytes;

    const r = await retention.prune({ dryRun: false, retain: 1 }, 'admin:a');
    expect(r.pruned).toEqual(['done.r0', 'done.r2', 'done.r3', 'live.r0', 'live.r1', 'live.r2']);
    expect(r.bytesFreed).toBe(6 * size + 10);
    const kept = r.decisions.filter((d) => d.action === 'keep');
    expect(kept.map((d) => [d.version, d.reasons])).toEqual([
      ['done.r1', ['marked-keep']],
      ['done.r4', ['latest-of-run']],
      ['live.r3', ['latest-of-run', 'active-run']],
    ]);
    expect(existsSync(models.exportsDir('done.r0'))).toBe(false);
    expect(models.hasWeights('done.r0')).toBe(false);
    expect(models.hasWeights('done.r1')).toBe(true);

    // The manifest (and so the parent-hash chain) is still there and still verifies.
    const pub = fromBase64(keys.publicKeys().signingPublicKey, 32);
    expect(verifySignedModelManifest(models.requireManifest('done.r0'), pub).version).toBe('done.r0');
    expect(models.list()).toHaveLength(9);
    try {
      models.readWeights('done.r0');
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'MODEL_WEIGHTS_NOT_FOUND')).toBe(true);
      expect((e as Error).message).toBe(
        'the weights of done.r0 were deleted by the retention policy; its signed manifest is kept',
      );
    }
    expect(() => models.readChunk('live.r0', 0, 10)).toThrow('were deleted by the retention policy');

    expect(await marks.get('done.r0')).toMatchObject({ prunedBy: 'admin:a', bytesFreed: size + 10 });
    const entries = await audit.list();
    expect(entries.map((e) => [e.action, e.target])).toEqual([
      ['model.kept', 'done.r1'],
      ...r.pruned.map((v) => ['model.pruned', v]),
    ]);
    expect(entries[1]!.details).toEqual({ runId: 'done', round: 0, retain: 1, bytesFreed: size + 10 });
    expect((await audit.verify()).ok).toBe(true);

    // Nothing left to do: a second prune changes nothing and writes no entry.
    const again = await retention.prune({ dryRun: false, retain: 1 }, 'admin:a');
    expect(again.pruned).toEqual([]);
    expect(again.decisions.filter((d) => d.action === 'pruned')).toHaveLength(6);
    expect(await audit.count()).toBe(entries.length);
  });

  it('records a version whose weights vanished before it was marked (crash between delete and mark)', async () => {
    await start();
    rmSync(models.weightsPath('done.r0'));
    const r = await retention.prune({ dryRun: false, retain: 3 }, 'system');
    expect(r.pruned).toEqual(['done.r1', 'live.r0']);
    expect(await marks.get('done.r0')).toMatchObject({ prunedBy: 'system', bytesFreed: 0 });
  });

  it('prunes after each published round when FEDSSL_RETAIN_VERSIONS is set, not otherwise', async () => {
    await start();
    events.emit('round', { runId: 'done', round: 4, attempt: 1, state: 'published' });
    await retention.idle();
    expect(models.hasWeights('done.r0')).toBe(true);
    retention.stop();

    await start({ FEDSSL_RETAIN_VERSIONS: '2' });
    events.emit('round', { runId: 'live', round: 3, attempt: 1, state: 'training' });
    await retention.idle();
    expect(models.hasWeights('done.r0')).toBe(true);
    events.emit('round', { runId: 'live', round: 3, attempt: 1, state: 'published' });
    await retention.idle();
    expect(
      models
        .list()
        .filter((m) => !models.hasWeights(m.manifest.version))
        .map((m) => m.manifest.version),
    ).toEqual(['done.r0', 'done.r1', 'done.r2', 'live.r0', 'live.r1']);
    expect((await audit.list()).every((e) => e.actor === 'system' && e.action === 'model.pruned')).toBe(true);
  });

  it('keep marks need an existing version', async () => {
    await start();
    await expect(retention.setKeep('nope.r1', true, 'admin:a')).rejects.toThrow(
      'no published model version nope.r1',
    );
  });
});
