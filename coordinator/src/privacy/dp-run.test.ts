import { afterEach, describe, expect, it } from 'vitest';
import { decodeWeights } from '@fedssl/shared/codec';
import {
  dpEpsilon,
  GaussianSampler,
  globalL2Norm,
  noiseNormBound,
  privatizeDelta,
  scalarCount,
  seededBytes,
} from '@fedssl/shared/privacy';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import {
  captureLogs,
  constantDelta,
  FederationFixture,
  testRunBody,
  type FakeAgent,
} from '../runs/federation.fixture';
import { parseRunConfig } from '../runs/run-config';
import { openEnvelopeFile } from '../uploads/update-store';

const dp = { clipNorm: 0.5, noiseMultiplier: 1.2, delta: 1e-5 };

async function nextTasks(agents: FakeAgent[], round: number) {
  return Promise.all(
    agents.map(async (a) => {
      const have = a.tasks.find((t) => t.round === round);
      return have ?? a.nextTask();
    }),
  );
}

describe('differential privacy run (in-process federation)', () => {
  let f: FederationFixture;
  afterEach(() => f?.close());

  it('carries the DP options in signed tasks, reports the accountant ε per round (status, log, audit) for noisy clipped updates', async () => {
    const log = captureLogs();
    f = await FederationFixture.create(log.logger);
    const agents = [f.agent('site-a', 100, 0.3), f.agent('site-b', 100, -0.2)];
    for (const a of agents) f.connect(a);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 2, minSites: 2, privacy: { dp } }));
    const firstTasks = agents.map((a) => a.nextTask());
    await f.runs.start(run.id);
    const uploaded: Float32Array[] = [];

    for (const round of [1, 2]) {
      const tasks = round === 1 ? await Promise.all(firstTasks) : await nextTasks(agents, round);
      for (const [i, a] of agents.entries()) {
        const task = tasks[i]!;
        expect(task.privacy).toEqual({ dp, secureAggregation: false });
        // What the agent does (site-agent/src/privacy): clip to C, add N(0, (σC)²).
        const raw = constantDelta(task.model, a.deltaValue); // norm ≫ C
        const { delta } = privatizeDelta(
          raw,
          task.privacy!.dp!,
          new GaussianSampler(seededBytes(`${a.siteId}.${round}`)),
        );
        await f.upload(a.siteId, a.seal(task, { delta }));
      }
      await f.engine.idle();

      // ε in the run status equals the accountant's for `round` releases per site.
      const detail = await f.runs.get(run.id);
      const expected = dpEpsilon({
        noiseMultiplier: dp.noiseMultiplier,
        sampleRate: 1,
        steps: round,
        delta: dp.delta,
      });
      expect(detail.privacy).toMatchObject({ unit: 'site', releases: round, delta: dp.delta });
      expect(detail.privacy!.epsilon).toBe(expected.epsilon);
      expect(detail.privacy!.epsilon).toBeGreaterThan(0);

      // The audit entry of the published round and the log line carry the same ε.
      const published = (await f.audit.list()).filter((e) => e.action === 'round.published').at(-1)!;
      expect(published.details.privacy).toEqual({
        epsilon: expected.epsilon,
        delta: dp.delta,
        releases: round,
      });
      const line = log.lines.filter((l) => l.msg === 'privacy spent').at(-1)!;
      expect(line).toMatchObject({ runId: run.id, round, epsilon: expected.epsilon, releases: round });

      // What the coordinator stored: within C + noise bound, not the clipped delta, noise of std σC.
      for (const u of await f.repo.listUpdates(run.id, round, 1)) {
        const { header } = f.updates.readHeader(u.headerPath);
        const { tensors } = decodeWeights(
          openEnvelopeFile(u.envelopePath, header, f.keys.keys.box.secretKey),
        );
        const d = scalarCount(tensors);
        const norm = globalL2Norm(tensors);
        expect(norm).toBeLessThanOrEqual(dp.clipNorm + noiseNormBound(d, dp.clipNorm * dp.noiseMultiplier));
        const clippedValue = dp.clipNorm / Math.sqrt(d); // each coordinate of the clipped constant delta
        const data = Float64Array.from(tensors.flatMap((t) => Array.from(t.data)));
        const residualStd = Math.sqrt(data.reduce((s, x) => s + (Math.abs(x) - clippedValue) ** 2, 0) / d);
        expect(residualStd).toBeGreaterThan(0.9 * dp.clipNorm * dp.noiseMultiplier);
        uploaded.push(Float32Array.from(data));
      }
    }
    expect((await f.runs.get(run.id)).state).toBe('completed');
    // The published model moved by the noisy mean, not by the raw deltas' mean (0.05 per weight).
    const w0 = f.flatWeights(`${run.id}.r0`);
    const step = f.flatWeights(`${run.id}.r1`).map((w, i) => w - w0[i]!);
    const mean = step.reduce((s, x) => s + x, 0) / step.length;
    expect(Math.abs(mean - 0.05)).toBeGreaterThan(0.01);
    expect(uploaded).toHaveLength(4);
  });

  it('refuses DP settings that cannot work, at creation and at start', async () => {
    const bad = (over: Record<string, unknown>) => {
      try {
        parseRunConfig(testRunBody(over as never));
        return null;
      } catch (e) {
        return isFedsslErrorLike(e) ? `${e.code}: ${e.message}` : String(e);
      }
    };
    expect(bad({ privacy: { dp: { clipNorm: 0, noiseMultiplier: 1, delta: 1e-5 } } })).toBe(
      'RUN_CONFIG_INVALID: privacy.dp.clipNorm: Too small: expected number to be >0',
    );
    expect(bad({ privacy: { dp: { clipNorm: 1, noiseMultiplier: 1, delta: 1 } } })).toBe(
      'RUN_CONFIG_INVALID: privacy.dp.delta: Too big: expected number to be <1',
    );
    expect(
      bad({ maxUpdateNorm: 2, privacy: { dp: { clipNorm: 1, noiseMultiplier: 1, delta: 1e-5 } } }),
    ).toMatch(
      /^RUN_CONFIG_INVALID: maxUpdateNorm: 2 would reject honest DP updates: clipNorm plus noise reaches \d/,
    );
    expect(bad({ strategy: 'median', privacy: { secureAggregation: true } })).toMatch(
      /^RUN_CONFIG_INVALID: strategy: secure aggregation supports fedavg without server clipping only/,
    );
    expect(bad({ minSites: 1, privacy: { secureAggregation: true } })).toBe(
      'RUN_CONFIG_INVALID: minSites: secure aggregation needs at least 2 sites per round (a sum of one is the update)',
    );
    expect(bad({ privacy: { secureAggregation: true } })).toBeNull();
    expect(bad({ privacy: { dp } })).toBeNull();

    // A stored config that no longer passes (e.g. written by an older coordinator) cannot start.
    f = await FederationFixture.create();
    const run = await f.runs.create(testRunBody({ privacy: { dp } }));
    const stored = await f.repo.getRun(run.id);
    await f.repo.transaction(async () => {
      await f.db.execute('UPDATE runs SET config = $1 WHERE id = $2', [
        JSON.stringify({ ...stored!.config, maxUpdateNorm: 1 }),
        run.id,
      ]);
    });
    await expect(f.runs.start(run.id)).rejects.toMatchObject({ code: 'RUN_CONFIG_INVALID' });
    expect((await f.repo.getRun(run.id))!.state).toBe('created');
  });
});
