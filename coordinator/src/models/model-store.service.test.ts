import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  mkdtempSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { fromBase64, sha256Hex, signModelManifest, verifySignedModelManifest } from '@fedssl/shared/crypto';
import { INPUT_NORMALIZATION, tinyModelConfig, trainingConfigSchema } from '@fedssl/shared/model';
import { MAX_CHUNK_BYTES } from '@fedssl/shared/protocol';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { codeOfSync } from '../testing/errors';
import { ModelStoreService, type PublishArgs } from './model-store.service';

const silent = pino({ level: 'silent' });

const weights = (scale = 1): NamedTensors => [
  { name: 'enc/w', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6].map((x) => x * scale)) },
  { name: 'enc/b', shape: [3], data: Float32Array.from([0.5, -0.5, 0.25]) },
];

describe('ModelStoreService', () => {
  let dir: string;
  let keys: CoordinatorKeysService;
  let store: ModelStoreService;
  const clock = { now: () => Date.parse('2025-03-01T12:00:00.000Z') };
  const args = (over: Partial<PublishArgs> = {}): PublishArgs => ({
    version: 'run-1.r0',
    runId: 'run-1',
    round: 0,
    model: tinyModelConfig(32),
    weights: weights(),
    parentVersion: null,
    parentSha256: null,
    sites: [],
    strategy: 'fedavg',
    ...over,
  });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-models-'));
    const config = loadConfig({ FEDSSL_DATA_DIR: dir });
    keys = new CoordinatorKeysService(config, silent);
    store = new ModelStoreService(config, keys, clock, silent);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('publishes a signed manifest that verifies with the coordinator public key', () => {
    const signed = store.publish(args({ sites: [{ siteId: 'site-a', exampleCount: 10 }] }));
    const pub = fromBase64(keys.publicKeys().signingPublicKey, 32);
    const manifest = verifySignedModelManifest(signed, pub);
    const bytes = readFileSync(store.weightsPath('run-1.r0'));
    expect(manifest).toMatchObject({
      version: 'run-1.r0',
      round: 0,
      weightsBytes: bytes.length,
      weightsSha256: sha256Hex(new Uint8Array(bytes)),
      createdAt: '2025-03-01T12:00:00.000Z',
      sites: [{ siteId: 'site-a', exampleCount: 10 }],
    });
    expect(signed.keyId).toBe(keys.keyId);
    expect(new Uint8Array(bytes)).toEqual(encodeWeights(weights()));
    // A tampered manifest no longer verifies.
    const tampered = { ...signed, manifest: { ...signed.manifest, round: 1 } };
    expect(() => verifySignedModelManifest(tampered, pub)).toThrow(/signature does not verify/);
  });

  it('signs the input and the run hyperparameters into the manifest; older manifests without them still read and verify', () => {
    const hyperparameters = {
      training: { ...trainingConfigSchema.parse({ batchSize: 16 }) },
      strategy: { name: 'trimmed-mean', beta: 0.2 },
      seed: 9,
    };
    const signed = store.publish(args({ hyperparameters }));
    const pub = fromBase64(keys.publicKeys().signingPublicKey, 32);
    expect(verifySignedModelManifest(signed, pub)).toMatchObject({
      input: { channels: 1, size: 32, normalization: INPUT_NORMALIZATION },
      hyperparameters,
    });
    const tampered = {
      ...signed,
      manifest: { ...signed.manifest, hyperparameters: { ...hyperparameters, seed: 10 } },
    };
    expect(() => verifySignedModelManifest(tampered, pub)).toThrow(/signature does not verify/);

    // A manifest as published before these fields existed: no input, no hyperparameters.
    const { input: _input, hyperparameters: _hp, ...old } = signed.manifest;
    const oldSigned = signModelManifest(
      { ...old, version: 'run-1.r1' },
      keys.keys.signing.secretKey,
      keys.keyId,
    );
    mkdirSync(join(dir, 'models', 'run-1.r1'));
    writeFileSync(join(dir, 'models', 'run-1.r1', 'manifest.json'), JSON.stringify(oldSigned));
    const reopened = new ModelStoreService(loadConfig({ FEDSSL_DATA_DIR: dir }), keys, clock, silent);
    const read = reopened.requireManifest('run-1.r1');
    expect(read.manifest.input).toBeUndefined();
    expect(read.manifest.hyperparameters).toBeUndefined();
    expect(verifySignedModelManifest(read, pub).version).toBe('run-1.r1');
    // Read back exactly as signed (the training and strategy objects are not re-filled with defaults).
    expect(reopened.requireManifest('run-1.r0')).toEqual(signed);
  });

  it('reads weights back, survives a restart, and lists versions', () => {
    store.publish(args());
    store.publish(args({ version: 'run-1.r1', round: 1, weights: weights(2), parentVersion: 'run-1.r0' }));
    const reopened = new ModelStoreService(loadConfig({ FEDSSL_DATA_DIR: dir }), keys, clock, silent);
    const w = reopened.readWeights('run-1.r1');
    expect(w.map((t) => t.name)).toEqual(['enc/w', 'enc/b']);
    expect(Array.from(w[0]?.data ?? [])).toEqual([2, 4, 6, 8, 10, 12]);
    expect(reopened.list().map((m) => m.manifest.version)).toEqual(['run-1.r0', 'run-1.r1']);
    expect(reopened.getManifest('run-1.r1')).toEqual(store.getManifest('run-1.r1'));
    expect(reopened.getManifest('nope')).toBeUndefined();
    expect(codeOfSync(() => reopened.readWeights('nope'))).toBe('MODEL_VERSION_NOT_FOUND');
  });

  it('refuses to overwrite a published version and rejects unsafe version ids', () => {
    store.publish(args());
    expect(codeOfSync(() => store.publish(args({ weights: weights(3) })))).toBe('MODEL_VERSION_EXISTS');
    expect(codeOfSync(() => store.publish(args({ version: '..' })))).toBe('PROTOCOL_INVALID_MESSAGE');
    expect(codeOfSync(() => store.publish(args({ version: 'a/b' })))).toBe('PROTOCOL_INVALID_MESSAGE');
    expect(store.getManifest('..')).toBeUndefined();
  });

  it('detects corrupted weights on disk', () => {
    store.publish(args());
    const file = store.weightsPath('run-1.r0');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1]! ^= 1;
    writeFileSync(file, bytes);
    expect(codeOfSync(() => store.readWeights('run-1.r0'))).toBe('MODEL_HASH_MISMATCH');
  });

  it('reads chunks within bounds and rejects out-of-range requests', () => {
    const signed = store.publish(args());
    const size = signed.manifest.weightsBytes;
    const all = new Uint8Array(readFileSync(store.weightsPath('run-1.r0')));
    const parts: Uint8Array[] = [];
    for (let off = 0; off < size; off += 7) parts.push(store.readChunk('run-1.r0', off, 7));
    expect(Buffer.concat(parts)).toEqual(Buffer.from(all));
    expect(store.readChunk('run-1.r0', size - 1, 100)).toEqual(all.slice(size - 1));
    expect(codeOfSync(() => store.readChunk('run-1.r0', size, 1))).toBe('MODEL_CHUNK_OUT_OF_RANGE');
    expect(codeOfSync(() => store.readChunk('run-1.r0', -1, 1))).toBe('MODEL_CHUNK_OUT_OF_RANGE');
    expect(codeOfSync(() => store.readChunk('run-1.r0', 0.5, 1))).toBe('MODEL_CHUNK_OUT_OF_RANGE');
    expect(codeOfSync(() => store.readChunk('run-1.r0', 0, 0))).toBe('MODEL_CHUNK_OUT_OF_RANGE');
    expect(codeOfSync(() => store.readChunk('run-1.r0', 0, MAX_CHUNK_BYTES + 1))).toBe(
      'MODEL_CHUNK_OUT_OF_RANGE',
    );
    expect(codeOfSync(() => store.readChunk('missing', 0, 1))).toBe('MODEL_VERSION_NOT_FOUND');
  });

  it('never leaves temp files, and cleans up ones left by a crash', () => {
    store.publish(args());
    expect(() => store.publish(args())).toThrow();
    expect(() =>
      store.publish(
        args({ version: 'bad', weights: [{ name: 'x', shape: [2], data: new Float32Array(3) }] }),
      ),
    ).toThrow();
    const models = join(dir, 'models');
    expect(readdirSync(models)).toEqual(['run-1.r0']);
    expect(readdirSync(join(models, 'run-1.r0')).sort()).toEqual(['manifest.json', 'weights.fsw']);
    // Simulate a crash mid-publication.
    mkdirSync(join(models, '.tmp-run-1.r1-abc'));
    writeFileSync(join(models, '.tmp-run-1.r1-abc', 'weights.fsw'), 'partial');
    const reopened = new ModelStoreService(loadConfig({ FEDSSL_DATA_DIR: dir }), keys, clock, silent);
    expect(readdirSync(models)).toEqual(['run-1.r0']);
    expect(reopened.list()).toHaveLength(1);
    expect(existsSync(join(models, 'bad'))).toBe(false);
  });
});
