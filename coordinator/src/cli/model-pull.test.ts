import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  INPUT_NORMALIZATION,
  decodeSafetensors,
  featureDim,
  initSharedWeights,
  tinyModelConfig,
  toTorchStateDict,
  trainingConfigSchema,
} from '@fedssl/shared/model';
import { fileLoadHandler } from '@fedssl/shared/model/tf';
import { loadConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { ModelStoreService } from '../models/model-store.service';
import { runAdminCliAt } from '../testing/admin-cli';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

const model = { ...tinyModelConfig(32), norm: 'batch' as const };
const weights = initSharedWeights(model, 5);
const groupModel = { ...tinyModelConfig(32), norm: 'group' as const };

describe('fedssl-admin models pull --format', () => {
  let dir: string;
  let running: TestCoordinator;
  let token: string;

  const cli = (...argv: string[]) => runAdminCliAt(running.url, token, argv);

  beforeAll(async () => {
    running = await startTestCoordinator({ prefix: 'fedssl-pull-' });
    dir = running.dataDir;
    token = await running.token('admin', 'cli');
    const store = running.app.get(ModelStoreService);
    store.publish({
      version: 'gn.r1',
      // Its own run (kept by retention as the latest of it), published first (not `latest`).
      runId: 'gn',
      round: 1,
      model: groupModel,
      weights: initSharedWeights(groupModel, 5),
      parentVersion: null,
      parentSha256: null,
      sites: [{ siteId: 'site-a', exampleCount: 40 }],
      strategy: 'fedavg',
    });
    for (const [version, round] of [
      ['real.r1', 1],
      ['real.r2', 2],
    ] as const) {
      store.publish({
        version,
        runId: null,
        round,
        model,
        weights,
        parentVersion: null,
        parentSha256: null,
        sites: [
          { siteId: 'site-a', exampleCount: 40 },
          { siteId: 'site-b', exampleCount: 60 },
        ],
        strategy: 'fedadam+clip',
      });
    }
  });
  afterAll(async () => {
    await running?.close();
  });

  it('writes safetensors with torchvision names, the signed manifest and a model card (latest version)', async () => {
    const out = join(dir, 'st');
    const fp = running.app.get(CoordinatorKeysService).publicKeys().fingerprint;
    const r = await cli(
      '--json',
      'models',
      'pull',
      '--version',
      'latest',
      '--format',
      'safetensors',
      '--out',
      out,
      '--fingerprint',
      fp,
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({
      version: 'real.r2',
      format: 'safetensors',
      files: ['model.safetensors', 'manifest.json', 'model-card.json', 'MODEL_CARD.md'],
    });
    expect(readdirSync(out).sort()).toEqual([
      'MODEL_CARD.md',
      'manifest.json',
      'model-card.json',
      'model.safetensors',
    ]);
    const st = decodeSafetensors(new Uint8Array(readFileSync(join(out, 'model.safetensors'))));
    const expected = toTorchStateDict(model, weights);
    expect(st.tensors.map((t) => t.name)).toEqual(expected.map((t) => t.name));
    expect(st.tensors[0]).toEqual(expected[0]);
    expect(st.tensors.find((t) => t.name === 'conv1.weight')!.shape).toEqual([16, 1, 3, 3]);
    const served = running.app.get(ModelStoreService).getManifest('real.r2');
    expect(JSON.parse(st.metadata['fedssl.signed_manifest']!)).toEqual(served);
    expect(st.metadata).toMatchObject({
      format: 'pt',
      'fedssl.version': 'real.r2',
      'fedssl.coordinator_fingerprint': fp,
    });

    const card = JSON.parse(readFileSync(join(out, 'model-card.json'), 'utf8'));
    expect(card).toMatchObject({
      schema: 'fedssl-model-card/1',
      version: 'real.r2',
      round: 2,
      architecture: { arch: 'tiny', norm: 'batch', featureDim: featureDim(model) },
      input: { channels: 1, size: 32 },
      federation: { strategy: 'fedadam+clip', totalExamples: 100 },
      hyperparameters: null,
      provenance: { weightsSha256: served!.manifest.weightsSha256, coordinatorFingerprint: fp },
    });
    const md = readFileSync(join(out, 'MODEL_CARD.md'), 'utf8');
    expect(md).toContain('# fedssl model real.r2');
    expect(md).toContain('| site-b | 60 |');
    expect(md).toContain('load_file("model.safetensors")');
    expect(md).toContain('tf.loadLayersModel');
  });

  it('writes a TF.js LayersModel of the encoder that loads and runs', async () => {
    const out = join(dir, 'tfjs');
    const r = await cli('models', 'pull', '--version', 'real.r1', '--format', 'tfjs', '--out', out);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /^pulled real\.r1 \(\d+ bytes, sha256 [0-9a-f]{64}, verified\) as tfjs → .*: model\.json, weights\.bin, manifest\.json, model-card\.json, MODEL_CARD\.md\n/,
    );
    expect(r.out).toContain('\n  hyperparameters: not available\n');
    const loaded = await tfl.loadLayersModel(fileLoadHandler(out));
    const y = loaded.predict(tf.ones([1, 32, 32, 1])) as tf.Tensor;
    expect(y.shape).toEqual([1, featureDim(model)]);
    tf.dispose(y);
    loaded.dispose();
  });

  it('--input-size: a group-norm TF.js graph for another input size; refused with another format', async () => {
    const out = join(dir, 'tfjs-gn');
    const r = await cli(
      'models',
      'pull',
      '--version',
      'gn.r1',
      '--format',
      'tfjs',
      '--input-size',
      '48',
      '--out',
      out,
    );
    expect(r.code).toBe(0);
    const loaded = await tfl.loadLayersModel(fileLoadHandler(out));
    expect(loaded.inputs[0]!.shape).toEqual([null, 48, 48, 1]);
    const y = loaded.predict(tf.ones([1, 48, 48, 1])) as tf.Tensor;
    expect(y.shape).toEqual([1, featureDim(groupModel)]);
    tf.dispose(y);
    loaded.dispose();

    const bad = join(dir, 'st-size');
    const e = await cli(
      'models',
      'pull',
      '--version',
      'gn.r1',
      '--format',
      'safetensors',
      '--input-size',
      '48',
      '--out',
      bad,
    );
    expect(e.code).not.toBe(0);
    expect(e.err).toBe('error: PROTOCOL_INVALID_MESSAGE: --input-size applies to --format tfjs only\n');
    expect(existsSync(bad)).toBe(false);
  });

  it('GET /models/:version/download/tfjs?inputSize=48 serves the graph for that size; a malformed size is a 400', async () => {
    const get = (q: string) =>
      fetch(`${running.url}/api/v1/models/gn.r1/download/tfjs${q}`, {
        headers: { authorization: `Bearer ${token}` },
      });
    const ok = await get('?inputSize=48');
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-disposition')).toBe('attachment; filename="gn.r1-tfjs-48px.zip"');
    const bad = await get('?inputSize=4.8');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toBe(
      'inputSize must be one whole number of pixels, got "4.8"',
    );
  });

  it('verifies before converting: a tampered manifest writes nothing in any format', async () => {
    // Published through a second store over the same directory: the server reads it from disk.
    const offline = new ModelStoreService(
      loadConfig({ FEDSSL_DATA_DIR: dir, FEDSSL_PORT: '0' }),
      running.app.get(CoordinatorKeysService),
      { now: () => Date.now() },
      pino({ level: 'silent' }),
    );
    offline.publish({
      version: 'real.tampered',
      runId: null,
      round: 3,
      model,
      weights,
      parentVersion: null,
      parentSha256: null,
      sites: [{ siteId: 'site-a', exampleCount: 40 }],
      strategy: 'fedavg',
    });
    const file = join(dir, 'models', 'real.tampered', 'manifest.json');
    const signed = JSON.parse(readFileSync(file, 'utf8'));
    signed.manifest.sites[0].exampleCount = 4000; // schema-valid, no longer what was signed
    writeFileSync(file, JSON.stringify(signed));
    for (const format of ['safetensors', 'tfjs']) {
      const out = join(dir, `tampered-${format}`);
      const r = await cli('models', 'pull', '--version', 'real.tampered', '--format', format, '--out', out);
      expect(r.code).toBe(1);
      expect(r.err).toBe(
        'error: MANIFEST_SIGNATURE_INVALID: manifest of real.tampered is not signed by the coordinator key; nothing written\n',
      );
      expect(existsSync(out)).toBe(false);
    }
  });

  it('runs create takes the strategy, clipping and FedEMA flags', async () => {
    const base = ['--json', 'runs', 'create', '--name', 'robust', '--rounds', '2', '--min-sites', '1'];
    const r = await cli(
      ...base,
      '--strategy',
      'trimmed-mean',
      '--clip-norm',
      '5',
      '--local-update',
      'fedema',
      '--fedema-scaler',
      '0.5',
      '--norm',
      'batch',
      '--no-reuse-accepted-updates',
      '--site-optimizer-state',
      'keep',
    );
    expect(r.err).toBe('');
    expect(JSON.parse(r.out).config).toMatchObject({
      strategy: { name: 'trimmed-mean', clipNorm: 5 },
      training: { localUpdate: 'fedema', fedemaScaler: 0.5, siteOptimizerState: 'keep' },
      model: { norm: 'batch' },
      reuseAcceptedUpdates: false,
    });
    const plain = JSON.parse((await cli(...base)).out);
    expect(plain.config.strategy).toBe('fedavg');
    expect(plain.config.model.norm).toBe('group');
    expect(plain.config.reuseAcceptedUpdates).toBe(true);
    expect(plain.config.training).toMatchObject({ localUpdate: 'replace', fedemaScaler: 1 });
    // Absent, not 'reset': a run that does not ask for it sends the tasks it always sent.
    expect(plain.config.training.siteOptimizerState).toBeUndefined();
    const badMode = await cli(...base, '--site-optimizer-state', 'sometimes');
    expect(badMode.code).not.toBe(0);
    expect(badMode.err).toContain(
      "error: option '--site-optimizer-state <mode>' argument 'sometimes' is invalid. Allowed choices are reset, keep.",
    );
    const bad = await cli(...base, '--strategy', 'krum');
    expect(bad.code).not.toBe(0);
    expect(bad.err).toContain(
      "error: option '--strategy <name>' argument 'krum' is invalid. Allowed choices are fedavg, fedavgm, fedadam, median, trimmed-mean.",
    );
  });

  it('a run publishes its hyperparameters, strategy options, seed and input signed; pull shows them', async () => {
    const created = await cli(
      '--json',
      'runs',
      'create',
      '--name',
      'signed-hp',
      '--rounds',
      '1',
      '--min-sites',
      '1',
      '--strategy',
      'fedadam',
      '--batch-size',
      '4',
      '--seed',
      '42',
    );
    expect(created.err).toBe('');
    const runId = JSON.parse(created.out).id as string;
    expect((await cli('runs', 'start', runId)).code).toBe(0);
    const out = join(dir, 'signed-hp');
    const r = await cli('models', 'pull', '--version', `${runId}.r0`, '--out', out);
    expect(r.err).toContain('warning: coordinator key not pinned');
    expect(r.code).toBe(0);
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).manifest;
    expect(manifest.input).toEqual({ channels: 1, size: 32, normalization: INPUT_NORMALIZATION });
    expect(manifest.hyperparameters.seed).toBe(42);
    expect(manifest.hyperparameters.strategy).toEqual({
      name: 'fedadam',
      serverLearningRate: 0.01,
      beta1: 0.9,
      beta2: 0.99,
      tau: 0.001,
    });
    expect(trainingConfigSchema.parse(manifest.hyperparameters.training)).toEqual(
      manifest.hyperparameters.training,
    );
    expect(manifest.hyperparameters.training).toMatchObject({ batchSize: 4 });
    const card = JSON.parse(readFileSync(join(out, 'model-card.json'), 'utf8'));
    expect(card.hyperparametersSource).toBe('manifest');
    expect(r.out).toContain(
      '  federation: round 0 of run ' +
        runId +
        ', 0 site(s), 0 examples; strategy {"name":"fedadam","serverLearningRate":0.01,"beta1":0.9,"beta2":0.99,"tau":0.001}, seed 42\n',
    );
    expect(r.out).toContain(`  input: 32×32×1; ${INPUT_NORMALIZATION}\n`);
    expect(r.out).toContain('  hyperparameters (signed): {"localEpochs":1,');
    expect(r.out).toContain('"augmentation":{"randomResizedCrop":');
    await cli('runs', 'cancel', runId);
  });

  it('models keep and prune: dry run by default, --apply deletes weights, a pruned version cannot be pulled', async () => {
    expect((await cli('models', 'keep', 'real.r1')).out).toBe('real.r1 kept\n');
    const dry = await cli('models', 'prune', '--retain', '1');
    expect(dry.err).toBe('');
    expect(dry.out).toContain('real.r1  keep  (marked-keep)\n');
    expect(dry.out).toContain('real.r2  prune\n');
    expect(dry.out).toContain('real.tampered  keep  (latest-of-run)\n');
    expect(dry.out).toMatch(
      /would prune 1 version\(s\), \d+ bytes \(retain 1\); dry run, pass --apply to delete\n$/,
    );
    const store = running.app.get(ModelStoreService);
    expect(store.hasWeights('real.r2')).toBe(true);

    const applied = JSON.parse((await cli('--json', 'models', 'prune', '--retain', '1', '--apply')).out);
    expect(applied).toMatchObject({ dryRun: false, retain: 1, pruned: ['real.r2'] });
    expect(store.hasWeights('real.r2')).toBe(false);
    const r = await cli('models', 'pull', '--version', 'real.r2', '--out', join(dir, 'pruned'));
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      'error: MODEL_WEIGHTS_NOT_FOUND: the weights of real.r2 were deleted by the retention policy; its signed manifest is kept (HTTP 404 GET /models/real.r2/weights)\n',
    );
    expect(existsSync(join(dir, 'pruned'))).toBe(false);
    // The manifest is still served.
    expect((await cli('--json', 'models', 'list')).out).toContain('"version": "real.r2"');
  });

  it('refuses an unknown format', async () => {
    const r = await cli(
      'models',
      'pull',
      '--version',
      'real.r1',
      '--format',
      'onnx',
      '--out',
      join(dir, 'x'),
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(
      "error: option '--format <format>' argument 'onnx' is invalid. Allowed choices are fsw, tfjs, safetensors.",
    );
    expect(existsSync(join(dir, 'x'))).toBe(false);
  });
});
