import { afterEach, describe, expect, it } from 'vitest';
import { decodeWeights, encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { sharedParamSpecs } from '@fedssl/shared/model';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { FederationFixture, testRunBody } from '../runs/federation.fixture';

/**
 * Updates in float16 and int8 go through the real ingest (UploadService: verify, open,
 * decode, validate) and the round's FedAvg like float32 ones: the published model is the
 * global one plus the example-weighted mean of what the coordinator decodes.
 */
let f: FederationFixture | undefined;
afterEach(async () => {
  await f?.close();
  f = undefined;
});

/** A delta with varied values (so int8 and float16 actually round). */
function variedDelta(specs: ReturnType<typeof sharedParamSpecs>, seed: number): NamedTensors {
  return specs.map((s, k) => {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = Math.sin(seed * 7.1 + k * 1.3 + i * 0.37) * 1e-3;
    return { name: s.name, shape: s.shape.slice(), data };
  });
}

/** Two connected sites and a started one-round run; resolves their tasks. */
async function startRound(examples: [number, number], maxUpdateNorm?: number) {
  f = await FederationFixture.create();
  const a = f.agent('site-a', examples[0], 0);
  const b = f.agent('site-b', examples[1], 0);
  f.connect(a);
  f.connect(b);
  await f.engine.idle();
  const run = await f.runs.create(
    testRunBody({ rounds: 1, minSites: 2, ...(maxUpdateNorm ? { maxUpdateNorm } : {}) }),
  );
  const tasks = Promise.all([a.nextTask(), b.nextTask()]);
  await f.runs.start(run.id);
  const [taskA, taskB] = await tasks;
  return { f, a, b, run, taskA, taskB };
}

describe('float16 and int8 updates at the coordinator', () => {
  it('are accepted and averaged as decoded, one site in each encoding', async () => {
    const { f, a, b, run, taskA, taskB } = await startRound([100, 300]);
    const specs = sharedParamSpecs(taskA.model);
    const bytesA = encodeWeights(variedDelta(specs, 1), { dtype: 'float16' });
    const bytesB = encodeWeights(variedDelta(specs, 2), { dtype: 'int8' });
    expect((await f.upload('site-a', a.seal(taskA, { plaintext: bytesA }))).accepted).toBe(true);
    expect((await f.upload('site-b', b.seal(taskB, { plaintext: bytesB }))).accepted).toBe(true);
    await f.engine.idle();

    const detail = await f.runs.get(run.id);
    expect(detail.rounds.map((r) => r.state)).toEqual(['published']);
    const before = f.flatWeights(`${run.id}.r0`);
    const after = f.flatWeights(`${run.id}.r1`);
    const flat = (bytes: Uint8Array) =>
      Float64Array.from(decodeWeights(bytes).tensors.flatMap((t) => Array.from(t.data)));
    const da = flat(bytesA);
    const db = flat(bytesB);
    expect(after.length).toBe(da.length);
    let worst = 0;
    for (let i = 0; i < after.length; i++) {
      const expected = Math.fround(before[i]! + (100 * da[i]! + 300 * db[i]!) / 400);
      worst = Math.max(worst, Math.abs(after[i]! - expected));
    }
    // Exactly the float32 rounding of the float64 mean of what was decoded.
    expect(worst).toBeLessThan(1e-6);
  });

  it('refuses an int8 update whose norm exceeds the bound, as for float32', async () => {
    const { f, a, taskA: task } = await startRound([100, 100], 1e-3);
    const big = sharedParamSpecs(task.model).map((s) => ({
      name: s.name,
      shape: s.shape.slice(),
      data: new Float32Array(s.shape.reduce((x, y) => x * y, 1)).fill(0.5),
    }));
    let code = 'none';
    try {
      await f.upload('site-a', a.seal(task, { plaintext: encodeWeights(big, { dtype: 'int8' }) }));
    } catch (e) {
      code = isFedsslErrorLike(e) ? e.code : 'foreign';
    }
    expect(code).toBe('UPDATE_NORM_TOO_LARGE');
    expect((await f.repo.getTask(task.taskId))!.state).toBe('rejected');
  });
});
