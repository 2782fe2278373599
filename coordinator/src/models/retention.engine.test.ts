import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config';
import { FederationFixture, testRunBody } from '../runs/federation.fixture';
import { ModelMarksRepository } from './model-marks.repository';
import { RetentionService } from './retention.service';

describe('retention with the real round engine', () => {
  let f: FederationFixture;
  let retention: RetentionService | undefined;
  afterEach(async () => {
    retention?.stop();
    await f?.close();
  });

  it('prunes after each published round (FEDSSL_RETAIN_VERSIONS=1) without touching what the run still needs', async () => {
    f = await FederationFixture.create();
    retention = new RetentionService({
      config: loadConfig({ FEDSSL_DATA_DIR: f.dataDir, FEDSSL_RETAIN_VERSIONS: '1' }),
      models: f.models,
      marks: await new ModelMarksRepository(f.db).init(),
      runs: f.repo,
      audit: f.audit,
      clock: f.clock,
      logger: f.logger,
      engineEvents: f.engine.events,
    });
    const a = f.agent('site-a', 50, 0.01);
    f.connect(a);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 3, minSites: 1 }));
    let next = a.nextTask();
    await f.runs.start(run.id);
    const withWeights = () =>
      f.models
        .list()
        .filter((m) => f.models.hasWeights(m.manifest.version))
        .map((m) => m.manifest.version);
    for (const round of [1, 2, 3]) {
      const task = await next;
      expect(task.modelVersion).toBe(`${run.id}.r${round - 1}`);
      // The base of the round being trained is never pruned.
      expect(withWeights()).toContain(task.modelVersion);
      if (round < 3) next = a.nextTask();
      await f.upload('site-a', a.seal(task));
      await f.engine.idle();
      await retention.idle();
      expect(withWeights()).toEqual([`${run.id}.r${round}`]);
    }
    expect((await f.runs.get(run.id)).state).toBe('completed');
    // Every version is still listed (manifests kept), and the chain of parents is intact.
    const manifests = f.models.list().map((m) => m.manifest);
    expect(manifests.map((m) => m.version)).toEqual([0, 1, 2, 3].map((r) => `${run.id}.r${r}`));
    for (const m of manifests.slice(1)) {
      const parent = manifests.find((p) => p.version === m.parentVersion)!;
      expect(m.parentSha256).toBe(parent.weightsSha256);
    }
    const pruned = (await f.audit.list({ limit: 1000 })).filter((e) => e.action === 'model.pruned');
    expect(pruned.map((e) => [e.actor, e.target])).toEqual(
      [0, 1, 2].map((r) => ['system', `${run.id}.r${r}`]),
    );
  });
});
