import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { decodeWeights, encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import {
  generatePartyKeys,
  keyId,
  openUpdate,
  sha256Hex,
  signModelManifest,
  signTask,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  initSharedWeights,
  sharedParamSpecs,
  tinyModelConfig,
  trainingConfigSchema,
} from '@fedssl/shared/model';
import type { Ack, ModelManifest, SignedTask, Task, UpdateHeader } from '@fedssl/shared/protocol';
import { GaussianSampler, globalL2Norm, privatizeDelta, seededBytes } from '@fedssl/shared/privacy';
import { readLedger } from '../audit/ledger';
import type { TrainingDataset } from '../data/dataset';
import { decodeLocalState, encodeLocalState, type LocalState } from '../train/local-state';
import type { TrainRoundArgs, TrainRoundResult } from '../train/trainer';
import type { Clock } from './backoff';
import { fileLocalStateStore, type LocalStateStore } from './local-state-store';
import { fileOutbox, type Outbox } from './outbox';
import { TaskRunner, taskSeed, type TaskOutcome } from './task-runner';
import type { NotifyEvent, RequestEvent, RequestPayload, RequestResult, Uplink } from './uplink';

const logger = pino({ level: 'silent' });
const model = tinyModelConfig(32);
const training = trainingConfigSchema.parse({ batchSize: 4, maxStepsPerRound: 1 });
const globalWeights = initSharedWeights(model, 1);
const weightBytes = encodeWeights(globalWeights);
const modelHash = sha256Hex(weightBytes);
const dataset: TrainingDataset = {
  count: 4,
  height: 64,
  width: 64,
  pixels: new Float32Array(4 * 64 * 64),
  metadataLabels: Int32Array.from([0, 1, 0, 1]),
  metadataClasses: 2,
};

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** A clock whose sleeps return at once (and are recorded). */
const fastClock = (): Clock & { sleeps: number[] } => {
  const sleeps: number[] = [];
  return { sleeps, now: () => Date.now(), sleep: async (ms) => void sleeps.push(ms) };
};

function makeTask(overrides: Partial<Task> = {}): Task {
  return {
    taskId: 'task-1',
    runId: 'run-1',
    round: 1,
    siteId: 'site-a',
    modelVersion: 'v1',
    modelHash,
    model,
    training,
    nonce: toBase64(new Uint8Array(32).fill(9)),
    issuedAt: new Date().toISOString(),
    deadline: new Date(Date.now() + 3_600_000).toISOString(),
    ...overrides,
  };
}

function manifestFor(overrides: Partial<ModelManifest> = {}): ModelManifest {
  return {
    version: 'v1',
    runId: 'run-1',
    round: 0,
    model,
    weightsSha256: modelHash,
    weightsBytes: weightBytes.length,
    parentVersion: null,
    parentSha256: null,
    sites: [],
    strategy: 'fedavg',
    createdAt: new Date().toISOString(),
    ...overrides,
  };
}

type Handler<E extends RequestEvent> = (
  payload: RequestPayload<E>,
) => RequestResult<E> | Promise<RequestResult<E>>;

/**
 * A strict fake coordinator: only the request events given handlers are allowed; any other
 * call (or any call at all when `handlers` is empty) fails the test.
 */
class StrictFakeUplink implements Uplink {
  readonly requests: { event: RequestEvent; payload: unknown }[] = [];
  readonly notes: { event: NotifyEvent; payload: unknown }[] = [];
  readonly unexpected: string[] = [];
  constructor(private readonly handlers: Partial<{ [E in RequestEvent]: Handler<E> }>) {}

  async request<E extends RequestEvent>(event: E, payload: RequestPayload<E>): Promise<RequestResult<E>> {
    this.requests.push({ event, payload });
    const h = this.handlers[event] as Handler<E> | undefined;
    if (!h) {
      this.unexpected.push(event);
      throw new Error(`unexpected request ${event}`);
    }
    return h(payload);
  }
  notify<E extends NotifyEvent>(event: E, payload: Parameters<Uplink['notify']>[1]): void {
    this.notes.push({ event, payload });
  }
  async ready(): Promise<void> {}
}

/** A fake coordinator that serves the model and really opens and checks the update envelope. */
function honestCoordinator(
  coord: PartyKeys,
  site: PartyKeys,
  opts: { manifestKey?: PartyKeys; corruptChunk?: boolean; dropAt?: number } = {},
) {
  const received = new Map<number, Uint8Array>();
  let header: UpdateHeader | null = null;
  let signature = '';
  let dropped = false;
  const state = {
    opened: null as NamedTensors | null,
    dtypes: [] as string[],
    plaintextBytes: 0,
    begins: 0,
    chunkIndices: [] as number[],
  };
  const handlers: Partial<{ [E in RequestEvent]: Handler<E> }> = {
    'model:manifest': ({ version }) => {
      expect(version).toBe('v1');
      const signer = opts.manifestKey ?? coord;
      return signModelManifest(manifestFor(), signer.signing.secretKey, keyId(signer.signing.publicKey));
    },
    'model:chunk': ({ offset, length }) => {
      expect(length).toBeLessThanOrEqual(1024 * 1024);
      const data = weightBytes.slice(offset, offset + length);
      if (opts.corruptChunk) data[0] = data[0]! ^ 1;
      return { data };
    },
    'update:begin': (msg) => {
      state.begins++;
      header = msg.header;
      signature = msg.signature;
      let next = 0;
      while (received.has(next)) next++;
      return { uploadId: 'up-1', nextIndex: next };
    },
    'update:chunk': ({ uploadId, index, data }) => {
      expect(uploadId).toBe('up-1');
      if (opts.dropAt === index && !dropped) {
        dropped = true;
        throw new FedsslError(
          'COORDINATOR_UNREACHABLE',
          'no answer to update:chunk: socket has been disconnected',
        );
      }
      state.chunkIndices.push(index);
      received.set(index, data);
      return { nextIndex: index + 1 };
    },
    'update:commit': () => {
      const chunks = [...received.keys()].sort((a, b) => a - b).map((k) => received.get(k)!);
      const plain = openUpdate({
        header: header!,
        signature,
        chunks,
        siteSigningPublicKey: site.signing.publicKey,
        coordinatorBoxSecretKey: coord.box.secretKey,
      });
      const decoded = decodeWeights(plain, sharedParamSpecs(model));
      state.opened = decoded.tensors;
      state.dtypes = [...new Set(decoded.manifest.tensors.map((t) => t.dtype))];
      state.plaintextBytes = plain.length;
      return { accepted: true as const, updateId: 'upd-42' };
    },
  };
  return { handlers, state, header: () => header };
}

const memoryStates = (): LocalStateStore & { saved: Map<string, LocalState> } => {
  const saved = new Map<string, LocalState>();
  return { saved, load: async (r) => saved.get(r), save: async (r, s) => void saved.set(r, s) };
};

/** A fake trainer: delta = 0.01 everywhere (weights = global + 0.01), reports two progress steps. */
function fakeTrain(calls: TrainRoundArgs[]) {
  return async (args: TrainRoundArgs): Promise<TrainRoundResult> => {
    calls.push(args);
    args.onProgress?.({ step: 1, totalSteps: 2, loss: 1.5, imagesPerSecond: 10, etaSeconds: 1 });
    args.onProgress?.({ step: 2, totalSteps: 2, loss: 1.2, imagesPerSecond: 10, etaSeconds: 0 });
    return {
      delta: args.globalWeights.map((t) => ({
        name: t.name,
        shape: t.shape,
        data: new Float32Array(t.data.length).fill(0.01),
      })),
      weights: args.globalWeights.map((t) => ({ ...t, data: t.data.map((v) => v + 0.01) })),
      exampleCount: args.dataset.count,
      metrics: { loss: 1.2, byolLoss: 1, metadataLoss: 0.4, steps: 2, imagesPerSecond: 10, seconds: 0.1 },
      localState: { target: [], metadataHead: [], metadataClasses: args.dataset.metadataClasses },
    };
  };
}

let home: string;
let coord: PartyKeys;
let site: PartyKeys;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'fedssl-runner-'));
  dirs.push(home);
  coord = generatePartyKeys();
  site = generatePartyKeys();
});

function makeRunner<S extends LocalStateStore = ReturnType<typeof memoryStates>>(
  uplink: Uplink,
  trainCalls: TrainRoundArgs[],
  extra: {
    train?: (a: TrainRoundArgs) => Promise<TrainRoundResult>;
    clock?: Clock;
    outbox?: Outbox;
    localStates?: S;
    dpSampler?: () => GaussianSampler;
  } = {},
) {
  const outcomes: TaskOutcome[] = [];
  const states: string[] = [];
  const localStates = extra.localStates ?? (memoryStates() as LocalStateStore as S);
  const runner = new TaskRunner({
    uplink,
    siteId: 'site-a',
    coordinator: { signingPublicKey: coord.signing.publicKey, boxPublicKey: coord.box.publicKey },
    siteSigningSecretKey: site.signing.secretKey,
    uploadChunkSize: 4096,
    home,
    dataset: async () => dataset,
    train: extra.train ?? fakeTrain(trainCalls),
    localStates,
    ...(extra.outbox ? { outbox: extra.outbox } : {}),
    ...(extra.dpSampler ? { dpSampler: extra.dpSampler } : {}),
    logger,
    clock: extra.clock ?? fastClock(),
    progressIntervalMs: 60_000,
    onState: (s) => states.push(s),
    onOutcome: (o) => outcomes.push(o),
  });
  return { runner, outcomes, states, localStates };
}

function offer(runner: TaskRunner, signed: SignedTask | unknown): Promise<Ack> {
  return new Promise((resolve) => runner.handleOffer(signed, resolve));
}

describe('TaskRunner: offers', () => {
  it('refuses a task signed by another key, and never downloads or trains', async () => {
    const uplink = new StrictFakeUplink({});
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes } = makeRunner(uplink, calls);
    const impostor = generatePartyKeys();
    const ack = await offer(runner, signTask(makeTask(), impostor.signing.secretKey));
    expect(ack).toEqual({
      ok: false,
      error: {
        code: 'TASK_SIGNATURE_INVALID',
        message: 'task signature does not verify against the pinned coordinator key',
      },
    });
    await runner.idle();
    expect(runner.currentTaskId).toBeNull();
    expect(uplink.requests).toEqual([]);
    expect(calls).toEqual([]);
    expect(outcomes).toEqual([]);
    expect(await readLedger(home)).toEqual([]);
  });

  it('refuses a tampered task, a task for another site, an expired task, and garbage', async () => {
    const uplink = new StrictFakeUplink({});
    const { runner } = makeRunner(uplink, []);
    const signed = signTask(makeTask(), coord.signing.secretKey);
    const tampered = { ...signed, task: { ...signed.task, round: 2 } };
    expect(await offer(runner, tampered)).toMatchObject({
      ok: false,
      error: { code: 'TASK_SIGNATURE_INVALID' },
    });
    expect(await offer(runner, signTask(makeTask({ siteId: 'site-b' }), coord.signing.secretKey))).toEqual({
      ok: false,
      error: {
        code: 'TASK_NOT_FOR_THIS_SITE',
        message: 'task task-1 is addressed to site site-b, this is site-a',
      },
    });
    const past = new Date(Date.now() - 1000).toISOString();
    expect(
      await offer(runner, signTask(makeTask({ deadline: past }), coord.signing.secretKey)),
    ).toMatchObject({ ok: false, error: { code: 'TASK_EXPIRED' } });
    expect(await offer(runner, 'not a task')).toMatchObject({
      ok: false,
      error: { code: 'TASK_SIGNATURE_INVALID' },
    });
    expect(uplink.requests).toEqual([]);
  });
});

describe('TaskRunner: a round', () => {
  it('downloads and verifies the model, trains, seals, uploads, and records both in the ledger', async () => {
    const fake = honestCoordinator(coord, site);
    const uplink = new StrictFakeUplink(fake.handlers);
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes, states, localStates } = makeRunner(uplink, calls);
    const task = makeTask();
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    // A re-offer of the running task is acknowledged (it is already on it).
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();

    expect(uplink.unexpected).toEqual([]);
    expect(outcomes).toEqual([
      { taskId: 'task-1', runId: 'run-1', round: 1, status: 'accepted', updateId: 'upd-42' },
    ]);
    expect(states).toEqual(['downloading', 'training', 'uploading', 'idle']);
    // The trainer got exactly the verified global weights.
    expect(calls).toHaveLength(1);
    expect(encodeWeights(calls[0]!.globalWeights)).toEqual(weightBytes);
    expect(calls[0]!.model).toEqual(model);
    expect(calls[0]!.localState).toBeUndefined();
    expect(localStates.saved.get('run-1')?.metadataClasses).toBe(2);
    // The coordinator opened a genuine envelope bound to the task.
    const header = fake.header()!;
    expect(header).toMatchObject({
      siteId: 'site-a',
      runId: 'run-1',
      round: 1,
      taskId: 'task-1',
      taskNonce: task.nonce,
      baseModelHash: modelHash,
      exampleCount: 4,
    });
    expect(header.chunkSize).toBe(4096);
    expect(fake.state.opened!.map((t) => t.name)).toEqual(sharedParamSpecs(model).map((s) => s.name));
    expect(fake.state.opened!.every((t) => t.data.every((v) => Math.abs(v - 0.01) < 1e-7))).toBe(true);
    // Progress: the first step at once, the last one always; nothing failed.
    expect(uplink.notes).toEqual([
      { event: 'task:progress', payload: { taskId: 'task-1', step: 1, totalSteps: 2, loss: 1.5 } },
      { event: 'task:progress', payload: { taskId: 'task-1', step: 2, totalSteps: 2, loss: 1.2 } },
    ]);

    const ledger = await readLedger(home);
    expect(ledger.map((e) => e.kind)).toEqual(['download', 'upload']);
    expect(ledger[0]).toMatchObject({
      modelVersion: 'v1',
      modelSha256: modelHash,
      bytes: weightBytes.length,
      verified: true,
    });
    expect(ledger[1]).toMatchObject({
      taskId: 'task-1',
      accepted: true,
      updateId: 'upd-42',
      exampleCount: 4,
      ciphertextSha512: header.ciphertextSha512,
      tensors: sharedParamSpecs(model).map((s) => s.name),
    });
    // A finished task offered again is refused.
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toMatchObject({
      ok: false,
      error: { code: 'TASK_ALREADY_ANSWERED' },
    });
  });

  it("encodes the delta in the run's updateEncoding: float16 and int8 are smaller and decode close to it", async () => {
    const sizes: Record<string, number> = {};
    for (const updateEncoding of ['float32', 'float16', 'int8'] as const) {
      const fake = honestCoordinator(coord, site);
      const { runner, outcomes } = makeRunner(new StrictFakeUplink(fake.handlers), []);
      const task = makeTask({ taskId: `task-${updateEncoding}`, training: { ...training, updateEncoding } });
      expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
      await runner.idle();
      expect(outcomes.map((o) => o.status)).toEqual(['accepted']);
      expect(fake.state.dtypes).toEqual([updateEncoding]);
      sizes[updateEncoding] = fake.state.plaintextBytes;
      // 0.01 everywhere: float16's nearest value is 0.010002136…, int8's is 127 steps of 0.01/127.
      const tol = { float32: 1e-7, float16: 3e-6, int8: 1e-8 }[updateEncoding];
      expect(fake.state.opened!.every((t) => t.data.every((v) => Math.abs(v - 0.01) < tol))).toBe(true);
    }
    expect(sizes.float16! / sizes.float32!).toBeLessThan(0.6);
    expect(sizes.int8! / sizes.float32!).toBeLessThan(0.35);
  });

  it("applies the signed task's differential privacy before sealing and records it in the ledger", async () => {
    const fake = honestCoordinator(coord, site);
    const uplink = new StrictFakeUplink(fake.handlers);
    const { runner, outcomes } = makeRunner(uplink, [], {
      dpSampler: () => new GaussianSampler(seededBytes('runner')),
    });
    const dp = { clipNorm: 0.5, noiseMultiplier: 0.8, delta: 1e-5 };
    const task = makeTask({ privacy: { dp, secureAggregation: false } });
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();
    expect(outcomes.map((o) => o.status)).toEqual(['accepted']);
    // The coordinator opened exactly the clipped-and-noised delta (same seeded noise), not 0.01s.
    const raw = globalWeights.map((t) => ({ ...t, data: new Float32Array(t.data.length).fill(0.01) }));
    const expected = privatizeDelta(raw, dp, new GaussianSampler(seededBytes('runner')));
    expect(fake.state.opened!.map((t) => Array.from(t.data))).toEqual(
      expected.delta.map((t) => Array.from(t.data)),
    );
    expect(globalL2Norm(raw)).toBeGreaterThan(dp.clipNorm); // so it was clipped
    const ledger = await readLedger(home);
    expect(ledger.map((e) => e.kind)).toEqual(['download', 'privacy', 'upload']);
    expect(ledger[1]).toMatchObject({
      taskId: 'task-1',
      dp: { clipNorm: 0.5, noiseMultiplier: 0.8, noiseStd: 0.4, clipFactor: expected.applied.clipFactor },
    });
  });

  it('resumes an interrupted upload at the index the coordinator asks for', async () => {
    const fake = honestCoordinator(coord, site, { dropAt: 3 });
    const uplink = new StrictFakeUplink(fake.handlers);
    const clock = fastClock();
    const { runner, outcomes } = makeRunner(uplink, [], { clock });
    await offer(runner, signTask(makeTask(), coord.signing.secretKey));
    await runner.idle();
    expect(outcomes[0]).toMatchObject({ status: 'accepted' });
    expect(fake.state.begins).toBe(2);
    const n = fake.header()!.chunkCount;
    expect(n).toBeGreaterThan(4);
    // Chunks 0–2 went once; 3 failed and was sent again after the second begin.
    expect(fake.state.chunkIndices).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(clock.sleeps).toHaveLength(1);
  });

  it('survives a coordinator restart during the download: waits for the link, downloads again, re-offer is acked', async () => {
    const fake = honestCoordinator(coord, site);
    const serve = fake.handlers['model:manifest']!;
    let manifestCalls = 0;
    let reoffered: Promise<Ack> | null = null;
    const task = makeTask();
    const handlers = {
      ...fake.handlers,
      'model:manifest': (p: RequestPayload<'model:manifest'>) => {
        manifestCalls++;
        if (manifestCalls === 1) {
          // The restarted coordinator offers the same task again while it is still running.
          reoffered = offer(runner, signTask(task, coord.signing.secretKey));
          throw new FedsslError('COORDINATOR_UNREACHABLE', 'not connected: cannot send model:manifest');
        }
        return serve(p);
      },
    };
    const uplink = new StrictFakeUplink(handlers);
    const clock = fastClock();
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes } = makeRunner(uplink, calls, { clock });
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();
    expect(await reoffered).toEqual({ ok: true });
    expect(manifestCalls).toBe(2);
    expect(clock.sleeps).toHaveLength(1);
    expect(calls).toHaveLength(1);
    expect(outcomes).toEqual([
      { taskId: 'task-1', runId: 'run-1', round: 1, status: 'accepted', updateId: 'upd-42' },
    ]);
    expect(uplink.notes.filter((n) => n.event === 'task:failed')).toEqual([]);
  });

  it('refuses a model manifest not signed by the pinned key, reports task:failed, never trains', async () => {
    const fake = honestCoordinator(coord, site, { manifestKey: generatePartyKeys() });
    const uplink = new StrictFakeUplink(fake.handlers);
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes } = makeRunner(uplink, calls);
    await offer(runner, signTask(makeTask(), coord.signing.secretKey));
    await runner.idle();
    expect(calls).toEqual([]);
    expect(uplink.requests.map((r) => r.event)).toEqual(['model:manifest']);
    expect(outcomes[0]).toMatchObject({ status: 'failed', error: { code: 'MANIFEST_SIGNATURE_INVALID' } });
    expect(uplink.notes).toEqual([
      {
        event: 'task:failed',
        payload: {
          taskId: 'task-1',
          code: 'MANIFEST_SIGNATURE_INVALID',
          message: 'model manifest signature does not verify against the pinned coordinator key',
        },
      },
    ]);
  });

  it('refuses weights whose hash differs from the signed one', async () => {
    const fake = honestCoordinator(coord, site, { corruptChunk: true });
    const uplink = new StrictFakeUplink(fake.handlers);
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes } = makeRunner(uplink, calls);
    await offer(runner, signTask(makeTask(), coord.signing.secretKey));
    await runner.idle();
    expect(calls).toEqual([]);
    expect(outcomes[0]).toMatchObject({ status: 'failed', error: { code: 'MODEL_HASH_MISMATCH' } });
    expect((await readLedger(home)).length).toBe(0);
  });

  it('records a rejected update with the coordinator code', async () => {
    const fake = honestCoordinator(coord, site);
    fake.handlers['update:commit'] = () => {
      throw new FedsslError('UPDATE_NORM_TOO_LARGE', 'coordinator refused update:commit: norm 9 > 5', {
        event: 'update:commit',
      });
    };
    const uplink = new StrictFakeUplink(fake.handlers);
    const { runner, outcomes } = makeRunner(uplink, []);
    await offer(runner, signTask(makeTask(), coord.signing.secretKey));
    await runner.idle();
    expect(outcomes[0]).toMatchObject({ status: 'rejected', error: { code: 'UPDATE_NORM_TOO_LARGE' } });
    const ledger = await readLedger(home);
    expect(ledger[1]).toMatchObject({
      kind: 'upload',
      accepted: false,
      error: { code: 'UPDATE_NORM_TOO_LARGE' },
    });
  });

  it('honours task:cancel during training: aborts, uploads nothing', async () => {
    const fake = honestCoordinator(coord, site);
    const uplink = new StrictFakeUplink({
      'model:manifest': fake.handlers['model:manifest']!,
      'model:chunk': fake.handlers['model:chunk']!,
    });
    let started!: () => void;
    const trainingStarted = new Promise<void>((r) => (started = r));
    const train = (args: TrainRoundArgs) =>
      new Promise<TrainRoundResult>((_resolve, reject) => {
        args.signal!.addEventListener('abort', () => reject(args.signal!.reason as Error));
        started();
      });
    const { runner, outcomes } = makeRunner(uplink, [], { train });
    await offer(runner, signTask(makeTask(), coord.signing.secretKey));
    await trainingStarted;
    runner.handleCancel({ taskId: 'other', reason: 'x' });
    expect(runner.currentTaskId).toBe('task-1');
    runner.handleCancel({ taskId: 'task-1', reason: 'round closed' });
    await runner.idle();
    expect(outcomes).toEqual([
      {
        taskId: 'task-1',
        runId: 'run-1',
        round: 1,
        status: 'cancelled',
        error: { code: 'TRAINING_ABORTED', message: 'cancelled: round closed' },
      },
    ]);
    expect(uplink.unexpected).toEqual([]);
    expect(uplink.notes).toEqual([]);
  });

  it('takes a newer task (later round, new attempt, another run) once the current one winds down, refuses an older round', async () => {
    const fake = honestCoordinator(coord, site);
    const uplink = new StrictFakeUplink({
      'model:manifest': fake.handlers['model:manifest']!,
      'model:chunk': fake.handlers['model:chunk']!,
    });
    let started!: () => void;
    let trainingStarted = new Promise<void>((r) => (started = r));
    // Training blocks until aborted, as a long local epoch would.
    const train = (args: TrainRoundArgs) =>
      new Promise<TrainRoundResult>((_resolve, reject) => {
        args.signal!.addEventListener('abort', () => reject(args.signal!.reason as Error));
        started();
      });
    const { runner, outcomes } = makeRunner(uplink, [], { train });
    expect(
      await offer(runner, signTask(makeTask({ round: 2, taskId: 'task-r2' }), coord.signing.secretKey)),
    ).toEqual({ ok: true });
    await trainingStarted;

    // A stale offer of an earlier round of the same run is refused.
    const older = await offer(runner, signTask(makeTask({ taskId: 'task-r1' }), coord.signing.secretKey));
    expect(older).toMatchObject({ ok: false, error: { code: 'AGENT_BUSY' } });
    expect(runner.currentTaskId).toBe('task-r2');

    // A new attempt of the same round: the coordinator closed the old one; after the grace
    // (immediate with this clock) the current task stops and the new one starts.
    trainingStarted = new Promise<void>((r) => (started = r));
    const retry = await offer(
      runner,
      signTask(makeTask({ round: 2, taskId: 'task-r2b' }), coord.signing.secretKey),
    );
    expect(retry).toEqual({ ok: true });
    expect(outcomes[0]).toMatchObject({
      taskId: 'task-r2',
      status: 'cancelled',
      error: { code: 'TRAINING_ABORTED' },
    });
    expect(runner.currentTaskId).toBe('task-r2b');
    await trainingStarted;

    // Another run: the coordinator only offers it when it holds this site free.
    const otherRun = await offer(
      runner,
      signTask(makeTask({ taskId: 'task-x', runId: 'run-2', round: 1 }), coord.signing.secretKey),
    );
    expect(otherRun).toEqual({ ok: true });
    expect(outcomes[1]).toMatchObject({ taskId: 'task-r2b', status: 'cancelled' });
    expect(runner.currentTaskId).toBe('task-x');
    await runner.stop();
  });
});

describe('TaskRunner: FedEMA local update', () => {
  // The fake trainer moves every weight by +0.01 from where it starts.
  const movingTrain =
    (calls: TrainRoundArgs[]) =>
    async (args: TrainRoundArgs): Promise<TrainRoundResult> => {
      calls.push(args);
      const weights = args.globalWeights.map((t) => ({
        ...t,
        data: t.data.map((v) => v + 0.01),
      }));
      return {
        delta: weights.map((t) => ({ ...t, data: new Float32Array(t.data.length).fill(0.01) })),
        weights,
        exampleCount: args.dataset.count,
        metrics: { loss: 1, byolLoss: 1, metadataLoss: 0, steps: 1, imagesPerSecond: 1, seconds: 0 },
        localState: { target: [], metadataHead: [], metadataClasses: args.dataset.metadataClasses },
      };
    };

  it('starts from μ·local + (1−μ)·global, uploads the delta against the global model and keeps the new local model', async () => {
    const fake = honestCoordinator(coord, site);
    const uplink = new StrictFakeUplink(fake.handlers);
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes, localStates } = makeRunner(uplink, calls, { train: movingTrain(calls) });
    // Previous local model: global + 0.2 everywhere → ‖w_g − w_l‖ = 0.2·√P; λ gives μ = 0.5.
    const previous = globalWeights.map((t) => ({ ...t, data: t.data.map((v) => v + 0.2) }));
    const params = globalWeights.reduce((n, t) => n + t.data.length, 0);
    const divergence = Math.sqrt(
      previous.reduce(
        (s, t, i) => s + t.data.reduce((a, v, j) => a + (v - globalWeights[i]!.data[j]!) ** 2, 0),
        0,
      ),
    );
    expect(divergence).toBeCloseTo(0.2 * Math.sqrt(params), 2);
    await localStates.save('run-1', { target: [], metadataHead: [], metadataClasses: 2, online: previous });
    const task = makeTask({
      training: { ...training, localUpdate: 'fedema', fedemaScaler: 0.5 / divergence },
    });
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();

    expect(outcomes.map((o) => o.status)).toEqual(['accepted']);
    const init = calls[0]!.globalWeights;
    expect(
      init.every((t, i) => t.data.every((v, j) => Math.abs(v - (globalWeights[i]!.data[j]! + 0.1)) < 1e-5)),
    ).toBe(true);
    // Uploaded: (init + 0.01) − global = 0.11, not the trainer's 0.01 against its start.
    expect(fake.state.opened!.every((t) => t.data.every((v) => Math.abs(v - 0.11) < 1e-5))).toBe(true);
    expect(fake.header()!.metrics.fedemaMu).toBeCloseTo(0.5, 6);
    const saved = localStates.saved.get('run-1')!;
    expect(saved.online!.map((t) => t.name)).toEqual(init.map((t) => t.name));
    expect(
      saved.online!.every((t, i) =>
        t.data.every(
          (v, j) => v === init[i]!.data[j]! + 0.01 || Math.abs(v - init[i]!.data[j]! - 0.01) < 1e-6,
        ),
      ),
    ).toBe(true);
  });

  it('replaces (μ = 0) in the first round of a FedEMA run and keeps the local model from then on', async () => {
    const fake = honestCoordinator(coord, site);
    const uplink = new StrictFakeUplink(fake.handlers);
    const calls: TrainRoundArgs[] = [];
    const { runner, localStates } = makeRunner(uplink, calls, { train: movingTrain(calls) });
    const task = makeTask({ training: { ...training, localUpdate: 'fedema', fedemaScaler: 1 } });
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();
    expect(encodeWeights(calls[0]!.globalWeights)).toEqual(weightBytes);
    expect(fake.header()!.metrics.fedemaMu).toBe(0);
    expect(localStates.saved.get('run-1')!.online).toBeDefined();
  });
});

describe('TaskRunner: training seed', () => {
  it('seeds the same work the same way whatever the task id and nonce, and other work differently', async () => {
    const calls: TrainRoundArgs[] = [];
    for (const [taskId, fill] of [
      ['task-seed-1', 1],
      ['task-seed-2', 2],
    ] as const) {
      const { runner } = makeRunner(new StrictFakeUplink(honestCoordinator(coord, site).handlers), calls);
      const task = makeTask({ taskId, nonce: toBase64(new Uint8Array(32).fill(fill)) });
      expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
      await runner.idle();
    }
    expect(calls).toHaveLength(2);
    // A task offered again with a fresh nonce (new coordinator process, retried round, a second
    // run of the same config) trains with the same seed, so it produces the same update.
    expect(calls[0]!.seed).toBe(calls[1]!.seed);
    expect(calls[0]!.seed).toBe(taskSeed(makeTask()));
    const base = makeTask();
    const seeds = new Set([
      taskSeed(base),
      taskSeed({ ...base, round: 2 }),
      taskSeed({ ...base, siteId: 'site-b' }),
      taskSeed({ ...base, modelHash: 'f'.repeat(64) }),
    ]);
    expect(seeds.size).toBe(4);
  });
});

describe('TaskRunner: outbox (agent killed mid-upload)', () => {
  const outboxDir = () => join(home, 'state', 'outbox');

  it('resumes the same sealed update after a restart: no download, no training, only the missing chunks', async () => {
    const fake = honestCoordinator(coord, site);
    const serveChunk = fake.handlers['update:chunk']!;
    let sawChunk3!: () => void;
    const atChunk3 = new Promise<void>((r) => (sawChunk3 = r));
    // Process 1 "dies" while sending chunk 3: that request never completes, nothing after it runs.
    const first = new StrictFakeUplink({
      ...fake.handlers,
      'update:chunk': (p) => {
        if (p.index === 3) {
          sawChunk3();
          return new Promise<never>(() => {});
        }
        return serveChunk(p);
      },
    });
    const localStates = memoryStates();
    const dead = makeRunner(first, [], { outbox: fileOutbox(outboxDir(), logger), localStates });
    const task = makeTask();
    await offer(dead.runner, signTask(task, coord.signing.secretKey));
    await atChunk3;
    const firstHeader = fake.header()!;
    expect(fake.state.chunkIndices).toEqual([0, 1, 2]);
    localStates.saved.clear(); // as if the crash came before local state reached the disk

    // Process 2: the coordinator re-offers the same task. Only upload events are allowed.
    const second = new StrictFakeUplink({
      'update:begin': fake.handlers['update:begin']!,
      'update:chunk': serveChunk,
      'update:commit': fake.handlers['update:commit']!,
    });
    const calls: TrainRoundArgs[] = [];
    const { runner, outcomes } = makeRunner(second, calls, {
      outbox: fileOutbox(outboxDir(), logger),
      localStates,
    });
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();

    expect(second.unexpected).toEqual([]);
    expect(calls).toEqual([]);
    expect(outcomes).toEqual([
      { taskId: 'task-1', runId: 'run-1', round: 1, status: 'accepted', updateId: 'upd-42' },
    ]);
    // The same signed envelope, begun again; chunks 0–2 were not sent a second time.
    expect(fake.header()).toEqual(firstHeader);
    expect(second.requests[0]).toMatchObject({ event: 'update:begin', payload: { header: firstHeader } });
    const n = firstHeader.chunkCount;
    expect(fake.state.chunkIndices).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(second.requests.filter((r) => r.event === 'update:chunk')).toHaveLength(n - 3);
    expect(fake.state.opened!.every((t) => t.data.every((v) => Math.abs(v - 0.01) < 1e-7))).toBe(true);
    // The local state trained with the update is back, the outbox is empty, the ledger says so.
    expect(localStates.saved.get('run-1')?.metadataClasses).toBe(2);
    expect(await fileOutbox(outboxDir(), logger).get('task-1')).toBeUndefined();
    const uploads = (await readLedger(home)).filter((e) => e.kind === 'upload');
    expect(uploads).toHaveLength(1);
    expect(uploads[0]).toMatchObject({
      accepted: true,
      resumedFromChunk: 3,
      ciphertextSha512: firstHeader.ciphertextSha512,
    });
  });

  it('clears the outbox when the coordinator rejects the update for good, keeps it on shutdown', async () => {
    const fake = honestCoordinator(coord, site);
    fake.handlers['update:commit'] = () => {
      throw new FedsslError('UPDATE_NORM_TOO_LARGE', 'coordinator refused update:commit: norm', {
        event: 'update:commit',
      });
    };
    const outbox = fileOutbox(outboxDir(), logger);
    const rejected = makeRunner(new StrictFakeUplink(fake.handlers), [], { outbox });
    await offer(rejected.runner, signTask(makeTask(), coord.signing.secretKey));
    await rejected.runner.idle();
    expect(rejected.outcomes[0]).toMatchObject({ status: 'rejected' });
    expect(await outbox.get('task-1')).toBeUndefined();

    // Shutdown in the middle of the upload: the sealed update stays for the next start.
    let stuck!: () => void;
    const atChunk = new Promise<void>((r) => (stuck = r));
    let linkDown!: () => void;
    const hanging = new StrictFakeUplink({
      ...honestCoordinator(coord, site).handlers,
      'update:chunk': () => {
        stuck();
        return new Promise<never>((_resolve, reject) => {
          linkDown = () => reject(new FedsslError('COORDINATOR_UNREACHABLE', 'socket closed'));
        });
      },
    });
    const stopped = makeRunner(hanging, [], { outbox });
    await offer(stopped.runner, signTask(makeTask({ taskId: 'task-2' }), coord.signing.secretKey));
    await atChunk;
    // Shutdown aborts the task; the pending request ends as the link goes down.
    const stopping = stopped.runner.stop();
    linkDown();
    await stopping;
    expect(stopped.outcomes[0]).toMatchObject({ status: 'cancelled' });
    expect((await outbox.get('task-2'))?.taskId).toBe('task-2');
  });
});

describe('TaskRunner: local state of a retried round', () => {
  const codec = { encode: encodeLocalState, decode: decodeLocalState };
  const stateDir = async () => {
    const d = join(home, 'state');
    await mkdir(d, { recursive: true });
    return d;
  };
  /** Local state whose target weights tell which training produced it. */
  const stateOf = (mark: number): LocalState => ({
    target: [{ name: 'encoder.w', shape: [2], data: Float32Array.of(mark, -mark) }],
    metadataHead: [],
    metadataClasses: 2,
  });
  /** The fake trainer, leaving `stateOf(mark)` as its local state and recording the one it got. */
  const marking = (mark: number, started: (LocalState | undefined)[]) => async (args: TrainRoundArgs) => {
    started.push(args.localState);
    return { ...(await fakeTrain([])(args)), localState: stateOf(mark) };
  };
  const targetOf = (s: LocalState | undefined) => (s ? Array.from(s.target[0]!.data) : undefined);

  /** One task, start to accepted update, by a fresh process (runner) on the same state folder. */
  async function runTask(
    store: LocalStateStore,
    task: Task,
    mark: number,
    started: (LocalState | undefined)[],
  ) {
    const { runner, outcomes } = makeRunner(
      new StrictFakeUplink(honestCoordinator(coord, site).handlers),
      [],
      {
        train: marking(mark, started),
        localStates: store,
      },
    );
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();
    expect(outcomes.map((o) => o.status)).toEqual(['accepted']);
  }
  const attempt = (round: number, taskId: string, nonceFill: number) =>
    makeTask({ round, taskId, nonce: toBase64(new Uint8Array(32).fill(nonceFill)) });

  it('starts every attempt of a round from the state before it, and the next round from the last attempt', async () => {
    const store = fileLocalStateStore(await stateDir(), codec, logger);
    const started: (LocalState | undefined)[] = [];
    await runTask(store, attempt(1, 'task-r1', 1), 1, started);
    await runTask(store, attempt(2, 'task-r2a', 2), 21, started);
    // The coordinator failed round 2 (too few updates) and re-issues it: new task, same round.
    await runTask(store, attempt(2, 'task-r2b', 3), 22, started);
    await runTask(store, attempt(3, 'task-r3', 4), 3, started);
    expect(started.map(targetOf)).toEqual([undefined, [1, -1], [1, -1], [22, -22]]);
  });

  it('resuming a sealed update from the outbox keeps the same pair: the state before the round and the one it produced', async () => {
    const dir = await stateDir();
    const started: (LocalState | undefined)[] = [];
    await runTask(fileLocalStateStore(dir, codec, logger), attempt(1, 'task-r1', 1), 1, started);

    // Process 1 seals round 2's update into the outbox and dies before its local state is saved.
    const fake = honestCoordinator(coord, site);
    const outboxDir = join(dir, 'outbox');
    const disk = fileLocalStateStore(dir, codec, logger);
    let crashed!: () => void;
    const atCrash = new Promise<void>((r) => (crashed = r));
    const dying: LocalStateStore = {
      load: (runId, round) => disk.load(runId, round),
      save: () => {
        crashed();
        return new Promise<never>(() => {});
      },
    };
    const task = attempt(2, 'task-r2', 2);
    const dead = makeRunner(new StrictFakeUplink(fake.handlers), [], {
      train: marking(2, started),
      outbox: fileOutbox(outboxDir, logger),
      localStates: dying,
    });
    await offer(dead.runner, signTask(task, coord.signing.secretKey));
    await atCrash;

    // Process 2: the coordinator re-offers the task; the update is resumed, not trained again.
    const store = fileLocalStateStore(dir, codec, logger);
    const { runner, outcomes } = makeRunner(
      new StrictFakeUplink({
        'update:begin': fake.handlers['update:begin']!,
        'update:chunk': fake.handlers['update:chunk']!,
        'update:commit': fake.handlers['update:commit']!,
      }),
      [],
      { train: marking(99, started), outbox: fileOutbox(outboxDir, logger), localStates: store },
    );
    expect(await offer(runner, signTask(task, coord.signing.secretKey))).toEqual({ ok: true });
    await runner.idle();
    expect(outcomes.map((o) => o.status)).toEqual(['accepted']);
    expect(started.map(targetOf)).toEqual([undefined, [1, -1]]); // no training in process 2

    expect(targetOf(await store.load('run-1', 2))).toEqual([1, -1]);
    expect(targetOf(await store.load('run-1', 3))).toEqual([2, -2]);
    // So a retry of round 2 still starts from round 1's state, round 3 from the resumed update's.
    await runTask(store, attempt(2, 'task-r2b', 3), 22, started);
    await runTask(store, attempt(3, 'task-r3', 4), 3, started);
    expect(started.slice(2).map(targetOf)).toEqual([
      [1, -1],
      [22, -22],
    ]);
  });
});
