import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { generatePartyKeys } from '@fedssl/shared/crypto';
import type { Task } from '@fedssl/shared/protocol';
import { encodeWeights } from '@fedssl/shared/codec';
import { sharedParamSpecs, shapeSize, tinyModelConfig } from '@fedssl/shared/model';
import { encodeMaskedInput } from '@fedssl/shared/secagg';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { codeOf } from '../testing/errors';
import { maxUpdateBytes } from './upload.service';
import {
  constantDelta,
  FederationFixture,
  testModel,
  testRunBody,
  type FakeAgent,
} from '../runs/federation.fixture';

function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => d.name);
}

interface Ctx {
  f: FederationFixture;
  a: FakeAgent;
  b: FakeAgent;
  ta: Task;
  tb: Task;
}

/** Two sites, one run (minSites 2, one round) in training with a task each. */
async function setup(maxUpdateNorm?: number): Promise<Ctx> {
  const f = await FederationFixture.create();
  const a = f.agent('site-a', 10, 0.01);
  const b = f.agent('site-b', 10, 0.01);
  const pa = a.nextTask();
  const pb = b.nextTask();
  f.connect(a);
  f.connect(b);
  const run = await f.runs.create(
    testRunBody({ rounds: 1, minSites: 2, ...(maxUpdateNorm ? { maxUpdateNorm } : {}) }),
  );
  await f.runs.start(run.id);
  const [ta, tb] = await Promise.all([pa, pb]);
  return { f, a, b, ta, tb };
}

type Case = {
  name: string;
  code: string;
  /** Whether the task of site-a ends up `rejected` (authentic envelope) or stays `offered`. */
  taskState: 'rejected' | 'offered' | 'accepted';
  act: (c: Ctx) => unknown;
};

const flipByte = (index: number) => (i: number, c: Uint8Array) => {
  if (i !== index) return c;
  const copy = c.slice();
  copy[copy.length - 1]! ^= 0x80;
  return copy;
};

const CASES: Case[] = [
  {
    name: 'wrong signature (not the registered site key)',
    code: 'ENVELOPE_SIGNATURE_INVALID',
    taskState: 'offered',
    act: ({ f, a, ta }) =>
      f.upload('site-a', a.seal(ta, { signingSecretKey: generatePartyKeys().signing.secretKey })),
  },
  {
    name: "another site's task",
    code: 'TASK_UNKNOWN',
    taskState: 'offered',
    act: ({ f, b, ta }) => f.upload('site-b', b.seal(ta, { fields: (h) => void (h.siteId = 'site-b') })),
  },
  {
    name: 'a header for site-a sent over site-b’s connection',
    code: 'SITE_AUTH_FAILED',
    taskState: 'offered',
    act: ({ f, a, ta }) => f.upload('site-b', a.seal(ta)),
  },
  {
    name: 'a second envelope for a task already answered',
    code: 'TASK_ALREADY_ANSWERED',
    taskState: 'accepted',
    act: async ({ f, a, ta }) => {
      await f.upload('site-a', a.seal(ta));
      await f.upload('site-a', a.seal(ta));
    },
  },
  {
    name: 'wrong task nonce',
    code: 'UPDATE_TASK_NONCE_MISMATCH',
    taskState: 'rejected',
    act: ({ f, a, ta }) =>
      f.upload(
        'site-a',
        a.seal(ta, { fields: (h) => void (h.taskNonce = Buffer.alloc(32, 7).toString('base64')) }),
      ),
  },
  {
    name: 'wrong base model hash',
    code: 'UPDATE_BASE_MODEL_MISMATCH',
    taskState: 'rejected',
    act: ({ f, a, ta }) =>
      f.upload('site-a', a.seal(ta, { fields: (h) => void (h.baseModelHash = 'ab'.repeat(32)) })),
  },
  {
    name: 'example count 0',
    code: 'UPDATE_EXAMPLE_COUNT_INVALID',
    taskState: 'rejected',
    act: ({ f, a, ta }) => f.upload('site-a', a.seal(ta, { fields: (h) => void (h.exampleCount = 0) })),
  },
  {
    name: 'example count above 1e9',
    code: 'UPDATE_EXAMPLE_COUNT_INVALID',
    taskState: 'rejected',
    act: ({ f, a, ta }) => f.upload('site-a', a.seal(ta, { fields: (h) => void (h.exampleCount = 1e9 + 1) })),
  },
  {
    name: 'altered chunk',
    code: 'ENVELOPE_CHUNK_INVALID',
    taskState: 'rejected',
    act: ({ f, a, ta }) => f.upload('site-a', a.seal(ta), flipByte(0)),
  },
  {
    name: 'wrong tensor shapes',
    code: 'MODEL_WEIGHTS_MISMATCH',
    taskState: 'rejected',
    act: async ({ f, a, ta }) => {
      const delta = constantDelta(ta.model, 0.01);
      delta[0] = { name: delta[0]!.name, shape: [1, delta[0]!.data.length], data: delta[0]!.data };
      await f.upload('site-a', a.seal(ta, { delta }));
    },
  },
  {
    name: 'NaN in the delta',
    code: 'UPDATE_NOT_FINITE',
    taskState: 'rejected',
    act: async ({ f, a, ta }) => {
      const delta = constantDelta(ta.model, 0.01);
      delta[1]!.data[0] = Number.NaN;
      await f.upload('site-a', a.seal(ta, { delta }));
    },
  },
  {
    name: 'norm too large',
    code: 'UPDATE_NORM_TOO_LARGE',
    taskState: 'rejected',
    act: ({ f, a, ta }) => f.upload('site-a', a.seal(ta, { delta: constantDelta(ta.model, 1e6) })),
  },
];

describe('UploadService rejections', () => {
  let ctx: Ctx | undefined;
  afterEach(async () => ctx?.f.close());

  it.each(CASES)('$name → $code, nothing recorded', async (c) => {
    ctx = await setup();
    const { f, ta } = ctx;
    expect(await codeOf(() => c.act(ctx!))).toBe(c.code);
    const expectedUpdates = c.taskState === 'accepted' ? 1 : 0;
    expect(await f.repo.countUpdates()).toBe(expectedUpdates);
    expect(files(join(f.dataDir, 'updates')).filter((n) => n.endsWith('.env'))).toHaveLength(expectedUpdates);
    expect(files(join(f.dataDir, 'uploads'))).toEqual([]);
    const task = (await f.repo.getTask(ta.taskId))!;
    expect(task.state).toBe(c.taskState);
    if (c.taskState === 'rejected') expect(task.reason).toMatch(new RegExp(`^${c.code}: `));
    // The other site's task is never touched, and the round is not aggregated.
    expect((await f.repo.getTask(ctx.tb.taskId))!.state).toBe('offered');
    expect(f.models.getManifest(`${ta.runId}.r1`)).toBeUndefined();
  });

  it('refuses chunks out of order with the expected index, and resumes with nextIndex', async () => {
    ctx = await setup();
    const { f, a, ta } = ctx;
    const sealed = a.seal(ta, { chunkSize: 1024 });
    expect(sealed.chunks.length).toBeGreaterThan(2);
    const begin = { header: sealed.header, signature: sealed.signature };
    const { uploadId, nextIndex } = await f.uploads.begin('site-a', begin);
    expect(nextIndex).toBe(0);
    expect(await f.uploads.chunk('site-a', { uploadId, index: 0, data: sealed.chunks[0] })).toEqual({
      nextIndex: 1,
    });
    let err: unknown;
    try {
      await f.uploads.chunk('site-a', { uploadId, index: 2, data: sealed.chunks[2] });
    } catch (e) {
      err = e;
    }
    expect(isFedsslErrorLike(err) && [err.code, err.message, err.details]).toEqual([
      'UPLOAD_OUT_OF_ORDER',
      'expected chunk 1, got chunk 2',
      { expected: 1, index: 2 },
    ]);
    // Same envelope again: the same upload, resumed where it stopped.
    expect(await f.uploads.begin('site-a', begin)).toEqual({ uploadId, nextIndex: 1 });
    expect(
      await codeOf(() => f.uploads.chunk('site-b', { uploadId, index: 1, data: sealed.chunks[1] })),
    ).toBe('UPLOAD_UNKNOWN');
    expect(await codeOf(() => f.uploads.commit('site-a', { uploadId }))).toBe('ENVELOPE_CHUNK_COUNT');
    for (let i = 1; i < sealed.chunks.length; i++)
      await f.uploads.chunk('site-a', { uploadId, index: i, data: sealed.chunks[i] });
    expect(await f.uploads.commit('site-a', { uploadId })).toMatchObject({ accepted: true });
    expect((await f.repo.getTask(ta.taskId))!.state).toBe('accepted');
    expect(files(join(f.dataDir, 'uploads'))).toEqual([]);
  });

  it('answers the very envelope already accepted (its commit answer lost) as accepted again, storing nothing twice', async () => {
    ctx = await setup();
    const { f, a, ta } = ctx;
    const sealed = a.seal(ta);
    const first = await f.upload('site-a', sealed);
    expect(first).toMatchObject({ accepted: true });
    const begin = { header: sealed.header, signature: sealed.signature };
    const again = await f.uploads.begin('site-a', begin);
    // No chunk is asked for: the coordinator already holds them.
    expect(again.nextIndex).toBe(sealed.chunks.length);
    // Only the site that sent it may collect the answer.
    expect(await codeOf(() => f.uploads.commit('site-b', { uploadId: again.uploadId }))).toBe(
      'UPLOAD_UNKNOWN',
    );
    expect(await f.uploads.commit('site-a', { uploadId: again.uploadId })).toEqual(first);
    expect(await f.repo.countUpdates()).toBe(1);
    // A forged or re-sealed envelope for the same task is still refused.
    expect(await codeOf(() => f.upload('site-a', a.seal(ta)))).toBe('TASK_ALREADY_ANSWERED');
  });

  it('refuses an update after the task deadline, and from a revoked site', async () => {
    ctx = await setup();
    const { f, a, b, ta, tb } = ctx;
    const sealedB = b.seal(tb);
    f.sites.set('site-b', { ...b.site('revoked') });
    expect(await codeOf(() => f.upload('site-b', sealedB))).toBe('SITE_REVOKED');
    // Begun and fully sent before the deadline, committed after it.
    const sealed = a.seal(ta);
    const { uploadId } = await f.uploads.begin('site-a', {
      header: sealed.header,
      signature: sealed.signature,
    });
    for (const [index, data] of sealed.chunks.entries())
      await f.uploads.chunk('site-a', { uploadId, index, data });
    f.clock.advance(600_001);
    await f.engine.idle();
    expect(await codeOf(() => f.uploads.commit('site-a', { uploadId }))).toBe('TASK_EXPIRED');
    expect(await codeOf(() => f.upload('site-a', sealed))).toBe('TASK_EXPIRED');
    expect(files(join(f.dataDir, 'uploads'))).toEqual([]);
    expect(await f.repo.countUpdates()).toBe(0);
  });

  it('refuses malformed messages with exact messages', async () => {
    ctx = await setup();
    let err: unknown;
    try {
      await ctx.f.uploads.commit('site-a', { uploadId: 'x y' });
    } catch (e) {
      err = e;
    }
    expect(isFedsslErrorLike(err) && [err.code, err.message]).toEqual([
      'PROTOCOL_INVALID_MESSAGE',
      'uploadId: expected [A-Za-z0-9._:-]',
    ]);
  });
});

describe('maxUpdateBytes', () => {
  it('admits every encoding of a real update of the model, and not much more', () => {
    for (const model of [testModel(), tinyModelConfig(32)]) {
      const bound = maxUpdateBytes(model);
      const delta = constantDelta(model, 0.01);
      const n = sharedParamSpecs(model).reduce((a, s) => a + shapeSize(s.shape), 0);
      for (const dtype of ['float32', 'float16', 'int8'] as const)
        expect(encodeWeights(delta, { dtype }).length).toBeLessThanOrEqual(bound);
      expect(encodeMaskedInput(new Float64Array(n)).length).toBeLessThanOrEqual(bound);
      expect(bound).toBeLessThan(8 * n + 512 * delta.length + 64 * 1024 + 1);
    }
  });
});
