import { describe, expect, it } from 'vitest';
import { isFedsslError, type ErrorCode } from '../errors';
import type { ModelManifest, Task } from '../protocol/messages';
import { fromBase64, toBase64 } from './bytes';
import { generatePartyKeys, keyId } from './keys';
import { signModelManifest, signTask, verifySignedModelManifest, verifySignedTask } from './documents';
import { verifyUpdateHeader } from './envelope';
import {
  SIGNING_DOMAINS,
  signDomainJson,
  signJson,
  verifyDomainJson,
  verifyJson,
  type SigningDomain,
} from './sign';

const coordinator = generatePartyKeys();
const pk = coordinator.signing.publicKey;
const sk = coordinator.signing.secretKey;

function expectCode(fn: () => unknown, code: ErrorCode): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(isFedsslError(thrown, code), `expected ${code}, got ${String(thrown)}`).toBe(true);
}

const task: Task = {
  taskId: 'task-1',
  runId: 'run-1',
  round: 3,
  siteId: 'site-a',
  modelVersion: 'v2',
  modelHash: 'a'.repeat(64),
  model: {
    arch: 'tiny',
    inputSize: 32,
    norm: 'batch',
    projectorHidden: 16,
    projectionDim: 8,
    metadataHidden: 8,
  },
  training: {
    localEpochs: 1,
    maxStepsPerRound: 2,
    batchSize: 4,
    learningRate: 0.001,
    weightDecay: 0,
    emaMomentum: 0.99,
    metadataWeight: 0.5,
    localUpdate: 'replace',
    fedemaScaler: 1,
    updateEncoding: 'float32',
    augmentation: {
      randomResizedCrop: { enabled: true, scaleMin: 0.3, scaleMax: 1 },
      horizontalFlip: { enabled: true, probability: 0.5 },
      multiCrop: { localViews: 2, sizeFraction: 0.5, scaleMin: 0.05, scaleMax: 0.3 },
      gaussianBlur: { enabled: false, probability: 0.5, sigmaMax: 2 },
      colorJitter: { enabled: false, probability: 0.8, brightness: 0.4, contrast: 0.4 },
      grayscale: { enabled: false, probability: 0.2 },
      mixup: { enabled: false, alpha: 0.2 },
    },
  },
  nonce: toBase64(new Uint8Array(32).fill(7)),
  issuedAt: '2025-01-01T00:00:00.000Z',
  deadline: '2025-01-01T01:00:00.000Z',
};

const manifest: ModelManifest = {
  version: 'v3',
  runId: 'run-1',
  round: 3,
  model: task.model,
  weightsSha256: 'b'.repeat(64),
  weightsBytes: 1234,
  parentVersion: 'v2',
  parentSha256: 'a'.repeat(64),
  sites: [{ siteId: 'site-a', exampleCount: 10 }],
  strategy: 'fedavg',
  createdAt: '2025-01-01T01:00:00.000Z',
};

describe('signed tasks', () => {
  it('round-trips and survives JSON transport', () => {
    const st = signTask(task, sk);
    expect(verifySignedTask(st, pk)).toEqual(task);
    expect(verifySignedTask(JSON.parse(JSON.stringify(st)) as typeof st, pk)).toEqual(task);
  });

  it('drops keys whose value is undefined before signing', () => {
    const st = signTask({ ...task, model: { ...task.model, widths: undefined } }, sk);
    expect('widths' in st.task.model).toBe(false);
    expect(verifySignedTask(JSON.parse(JSON.stringify(st)) as typeof st, pk)).toEqual(task);
  });

  it('rejects a changed field, a wrong key and a mangled signature', () => {
    const st = signTask(task, sk);
    expectCode(
      () => verifySignedTask({ ...st, task: { ...st.task, round: 4 } }, pk),
      'TASK_SIGNATURE_INVALID',
    );
    expectCode(
      () => verifySignedTask({ ...st, task: { ...st.task, siteId: 'site-b' } }, pk),
      'TASK_SIGNATURE_INVALID',
    );
    expectCode(() => verifySignedTask(st, generatePartyKeys().signing.publicKey), 'TASK_SIGNATURE_INVALID');
    const sig = fromBase64(st.signature);
    sig[0] = (sig[0] ?? 0) ^ 0x80;
    expectCode(() => verifySignedTask({ ...st, signature: toBase64(sig) }, pk), 'TASK_SIGNATURE_INVALID');
    expectCode(() => verifySignedTask(null as never, pk), 'TASK_SIGNATURE_INVALID');
  });

  it('refuses to sign an invalid task', () => {
    expectCode(() => signTask({ ...task, round: 0 }, sk), 'PROTOCOL_INVALID_MESSAGE');
  });

  it('reports a correctly signed but malformed task as a protocol error', () => {
    // Only reachable if the coordinator itself signed junk; the signature is checked first.
    const bad = { ...task, extra: 1 };
    const sig = signDomainJson('task', bad, sk);
    expectCode(
      () => verifySignedTask({ task: bad, signature: sig } as never, pk),
      'PROTOCOL_INVALID_MESSAGE',
    );
    // The same junk with a signature from someone else is a signature error, not a schema one.
    const other = signDomainJson('task', bad, generatePartyKeys().signing.secretKey);
    expectCode(
      () => verifySignedTask({ task: bad, signature: other } as never, pk),
      'TASK_SIGNATURE_INVALID',
    );
  });
});

describe('signed model manifests', () => {
  it('round-trips and carries the key id unsigned', () => {
    const sm = signModelManifest(manifest, sk, keyId(pk));
    expect(sm.keyId).toBe(keyId(pk));
    expect(verifySignedModelManifest(sm, pk)).toEqual(manifest);
  });

  it('rejects tampering and wrong keys', () => {
    const sm = signModelManifest(manifest, sk, keyId(pk));
    expectCode(
      () =>
        verifySignedModelManifest({ ...sm, manifest: { ...sm.manifest, weightsSha256: 'c'.repeat(64) } }, pk),
      'MANIFEST_SIGNATURE_INVALID',
    );
    expectCode(
      () => verifySignedModelManifest(sm, generatePartyKeys().signing.publicKey),
      'MANIFEST_SIGNATURE_INVALID',
    );
  });
});

describe('domain separation', () => {
  it('a signature made in one domain verifies in no other', () => {
    const domains = Object.keys(SIGNING_DOMAINS) as SigningDomain[];
    for (const a of domains) {
      const sig = signDomainJson(a, task, sk);
      for (const b of domains) expect(verifyDomainJson(b, task, sig, pk), `${a} -> ${b}`).toBe(a === b);
    }
  });

  it('a task signature never verifies as a manifest, generic JSON or an update header', () => {
    const st = signTask(task, sk);
    // Present the task's signature over the very same object as another kind of document.
    expectCode(
      () =>
        verifySignedModelManifest(
          { manifest: st.task as unknown as ModelManifest, signature: st.signature, keyId: 'k' },
          pk,
        ),
      'MANIFEST_SIGNATURE_INVALID',
    );
    expect(verifyJson(st.task, st.signature, pk)).toBe(false);
    expectCode(() => verifyUpdateHeader(st.task as never, st.signature, pk), 'ENVELOPE_HEADER_INVALID');
  });

  it('a manifest or generic JSON signature never verifies as a task', () => {
    const sm = signModelManifest(manifest, sk, 'k');
    expectCode(
      () => verifySignedTask({ task: sm.manifest as unknown as Task, signature: sm.signature }, pk),
      'TASK_SIGNATURE_INVALID',
    );
    const generic = signJson(task, sk);
    expectCode(() => verifySignedTask({ task, signature: generic }, pk), 'TASK_SIGNATURE_INVALID');
  });
});
