import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { NamedTensors } from '@fedssl/shared/codec';
import { initSharedWeights, sharedParamSpecs, shapeSize } from '@fedssl/shared/model';
import type { SecAggAnswer, SecAggStep } from '@fedssl/shared/protocol';
import { decodeMaskedInput, isRingVector, pearson } from '@fedssl/shared/secagg';
import { SecAggDriver, secureFedAvg, type SecAggPeers } from '../../coordinator/src/privacy/secagg-driver';
import { testModel } from '../../coordinator/src/runs/federation.fixture';
import { applyStep, weightedMeanDelta } from '../../coordinator/src/strategies/fedavg';
import { SecAggParticipant } from '../../site-agent/src/privacy/secagg-participant';

const log = pino({ level: 'silent' });
const model = testModel();
const global = initSharedWeights(model, 7);

function deltaOf(k: number): NamedTensors {
  return sharedParamSpecs(model).map((s, t) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: Float32Array.from(
      { length: shapeSize(s.shape) },
      (_, i) => 0.01 * Math.sin(i * 0.3 + t + k) - 0.002 * k,
    ),
  }));
}

interface Site {
  id: string;
  taskId: string;
  examples: number;
  delta: NamedTensors;
  agent: SecAggParticipant;
  /** Steps this site stops answering from (simulated dropout). */
  goneAt?: SecAggStep['step'];
}

function sites(n: number): Site[] {
  return Array.from({ length: n }, (_, k) => {
    const id = `site-${String.fromCharCode(97 + k)}`;
    const taskId = `task-${k}`;
    return {
      id,
      taskId,
      examples: 50 * (k + 1),
      delta: deltaOf(k),
      agent: new SecAggParticipant(id, (t) => t === taskId, log),
    };
  });
}

/** The transport seam in memory: a step reaches the site's participant; its refusal rejects. */
function peers(all: Site[]): SecAggPeers & { seen: SecAggStep[] } {
  const seen: SecAggStep[] = [];
  return {
    seen,
    async step(siteId: string, msg: SecAggStep): Promise<SecAggAnswer> {
      seen.push(msg);
      const s = all.find((x) => x.id === siteId)!;
      if (s.goneAt === msg.step) throw new Error('no answer: site offline');
      // Through JSON, as on the wire.
      const res = await s.agent.handleStep(JSON.parse(JSON.stringify(msg)));
      if (!res.ok) throw new Error(`${res.error.code}: ${res.error.message}`);
      const { ok: _ok, ...answer } = res;
      return JSON.parse(JSON.stringify(answer)) as SecAggAnswer;
    },
  };
}

/** What plain FedAvg would publish from the same updates (independent computation). */
function plainFedAvg(included: Site[]): NamedTensors {
  const step = weightedMeanDelta({
    global,
    updates: included.map((s) => ({ siteId: s.id, exampleCount: s.examples, readDelta: () => s.delta })),
  });
  return applyStep(global, step);
}

async function secureRound(all: Site[], uploads: Site[]) {
  const dimension = sharedParamSpecs(model).reduce((n, s) => n + shapeSize(s.shape), 0);
  const p = peers(all);
  const driver = new SecAggDriver(
    p,
    'run-1/1/1',
    dimension,
    all.map((s) => ({ siteId: s.id, taskId: s.taskId })),
    log,
  );
  const masking = await driver.setup();
  // Each uploading site seals maskUpdate(...) bytes; the coordinator opens the envelope to these.
  const masked = new Map<string, Float64Array>();
  for (const s of uploads) {
    const bytes = s.agent.maskUpdate(s.taskId, s.delta, s.examples);
    masked.set(s.id, decodeMaskedInput(bytes, dimension));
  }
  const { sum, sites: covered } = await driver.unmaskSum(masked);
  const total = all.filter((s) => covered.includes(s.id)).reduce((n, s) => n + s.examples, 0);
  return { masking, masked, covered, weights: secureFedAvg(global, sum, total), seen: p.seen };
}

function maxAbsDiff(a: NamedTensors, b: NamedTensors): number {
  let m = 0;
  a.forEach((t, k) => t.data.forEach((v, i) => (m = Math.max(m, Math.abs(v - b[k]!.data[i]!)))));
  return m;
}

describe('secure aggregation round (coordinator driver ⇄ agent participants, in memory)', () => {
  it('publishes FedAvg of updates the coordinator only ever saw masked', async () => {
    const all = sites(3);
    const r = await secureRound(all, all);
    expect(r.masking).toEqual(['site-a', 'site-b', 'site-c']);
    expect(r.covered).toEqual(['site-a', 'site-b', 'site-c']);
    // Fixed point (2^-24) then float32: equal to plain FedAvg to float32 precision.
    expect(maxAbsDiff(r.weights, plainFedAvg(all))).toBeLessThan(1e-6);
    // The coordinator's view of one update: ring elements that do not track the real input.
    const y = r.masked.get('site-b')!;
    expect(isRingVector(y)).toBe(true);
    const x = Float64Array.from(all[1]!.delta.flatMap((t) => Array.from(t.data)));
    const corr = pearson(y, x);
    expect(Math.abs(corr)).toBeLessThan(5 / Math.sqrt(x.length));
    // Every step went to every site, in order.
    expect([...new Set(r.seen.map((m) => m.step))]).toEqual(['advertise', 'share', 'boxes', 'unmask']);
  });

  it('survives a site that drops after the masks are set up and never uploads', async () => {
    const all = sites(3);
    const r = await secureRound(all, [all[0]!, all[2]!]);
    expect(r.covered).toEqual(['site-a', 'site-c']);
    expect(maxAbsDiff(r.weights, plainFedAvg([all[0]!, all[2]!]))).toBeLessThan(1e-6);
  });

  it('survives a site that uploads its masked update and then goes offline', async () => {
    const all = sites(3);
    all[1]!.goneAt = 'unmask';
    const r = await secureRound(all, all);
    expect(maxAbsDiff(r.weights, plainFedAvg(all))).toBeLessThan(1e-6);
  });

  it('fails the round rather than reveal anything when too few sites are left to unmask', async () => {
    const all = sites(3);
    all[0]!.goneAt = 'unmask';
    all[1]!.goneAt = 'unmask';
    await expect(secureRound(all, all)).rejects.toMatchObject({ code: 'SECAGG_TOO_FEW_PARTIES' });
  });

  it('an agent answers steps only for its own secure task', async () => {
    const [a] = sites(1);
    const res = await a!.agent.handleStep({
      taskId: 'task-other',
      step: 'advertise',
      sessionId: 's',
      threshold: 2,
      dimension: 4,
      fractionBits: 24,
    });
    expect(res).toEqual({
      ok: false,
      error: {
        code: 'SECAGG_PROTOCOL',
        message: 'task task-other is not a secure-aggregation task of this site',
      },
    });
    expect(() => a!.agent.maskUpdate('task-0', a!.delta, 1)).toThrow(
      'secure aggregation of task task-0 was not set up',
    );
  });
});
