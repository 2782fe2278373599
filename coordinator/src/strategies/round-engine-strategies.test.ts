import { describe, it, expect, afterEach } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { verifySignedModelManifest } from '@fedssl/shared/crypto';
import { countParams, sharedParamSpecs } from '@fedssl/shared/model';
import { FederationFixture, testModel, testRunBody, type FakeAgent } from '../runs/federation.fixture';

/** The strategies through the real round engine: sealed uploads, disk, restart. */

async function tasksOf(...agents: FakeAgent[]) {
  return Promise.all(agents.map((a) => a.nextTask()));
}

describe('round engine with non-default strategies', () => {
  let f: FederationFixture;
  afterEach(() => f?.close());

  it('FedAdam keeps its server state across rounds and a coordinator restart', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 100, 0.01);
    const b = f.agent('site-b', 300, -0.02);
    f.connect(a);
    await f.engine.idle();
    f.connect(b);
    await f.engine.idle();
    const options = {
      name: 'fedadam' as const,
      serverLearningRate: 0.05,
      beta1: 0.9,
      beta2: 0.99,
      tau: 1e-3,
    };
    const run = await f.runs.create(testRunBody({ rounds: 3, minSites: 2, strategy: options }));
    let pending = Promise.all([a.nextTask(), b.nextTask()]);
    await f.runs.start(run.id);
    for (const round of [1, 2, 3]) {
      const [ta, tb] = await pending;
      await f.upload('site-a', a.seal(ta));
      let lastTask = tb;
      if (round === 2) {
        // Restart between two uploads of round 2: its aggregation reads round 1's state from disk.
        await f.restart();
        const reoffered = b.nextTask();
        await f.engine.resumeAll();
        lastTask = await reoffered;
        expect(lastTask.taskId).toBe(tb.taskId);
      }
      // The last upload publishes the round and opens the next one: wait for its tasks.
      pending = Promise.all([a.nextTask(), b.nextTask()]);
      await f.upload('site-b', b.seal(lastTask));
    }
    expect((await f.runs.get(run.id)).state).toBe('completed');

    // Independent reference: Reddi et al. Algorithm 2 with the constant pseudo-gradient
    // Δ = (100·0.01 + 300·(−0.02)) / 400 = −0.0125 in every coordinate.
    const d = (100 * 0.01 + 300 * -0.02) / 400;
    let m = 0;
    let v = 0;
    let step = 0;
    for (let r = 0; r < 3; r++) {
      m = options.beta1 * m + (1 - options.beta1) * d;
      v = options.beta2 * v + (1 - options.beta2) * d * d;
      step += (options.serverLearningRate * m) / (Math.sqrt(v) + options.tau);
    }
    const w0 = f.models.readWeights(`${run.id}.r0`);
    const w3 = f.models.readWeights(`${run.id}.r3`);
    for (let t = 0; t < w0.length; t += 5) {
      expect(w3[t]!.data[0]! - w0[t]!.data[0]!).toBeCloseTo(step, 4);
    }
    for (const r of [1, 2, 3]) {
      expect(existsSync(join(f.dataDir, 'strategy-state', run.id, `${run.id}.r${r}.fsw`))).toBe(true);
      const manifest = verifySignedModelManifest(
        f.models.getManifest(`${run.id}.r${r}`)!,
        f.keys.keys.signing.publicKey,
      );
      expect(manifest.strategy).toBe('fedadam');
    }
  });

  it('clipped coordinate-wise median resists an outlier site', async () => {
    f = await FederationFixture.create();
    const agents = [f.agent('site-a', 10, 0.01), f.agent('site-b', 10, 0.02), f.agent('site-c', 1000, 5)];
    for (const x of agents) {
      f.connect(x);
      await f.engine.idle();
    }
    const sqrtP = Math.sqrt(countParams(sharedParamSpecs(testModel())));
    const run = await f.runs.create(
      testRunBody({ rounds: 1, minSites: 3, strategy: { name: 'median', clipNorm: 0.015 * sqrtP } }),
    );
    const pending = tasksOf(...agents);
    await f.runs.start(run.id);
    const tasks = await pending;
    for (let k = 0; k < agents.length; k++) await f.upload(agents[k]!.siteId, agents[k]!.seal(tasks[k]!));
    expect((await f.runs.get(run.id)).state).toBe('completed');
    // Clipped to norm 0.015·√P: 0.01 stays, 0.02 and 5 become 0.015 everywhere → median 0.015.
    const w0 = f.models.readWeights(`${run.id}.r0`);
    const w1 = f.models.readWeights(`${run.id}.r1`);
    for (let t = 0; t < w0.length; t += 3) expect(w1[t]!.data[0]! - w0[t]!.data[0]!).toBeCloseTo(0.015, 5);
    expect(f.models.getManifest(`${run.id}.r1`)!.manifest.strategy).toBe('median+clip');
    expect(existsSync(join(f.dataDir, 'strategy-state'))).toBe(false);
  });
});
