import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFedsslError } from '@fedssl/shared/errors';
import {
  decodeSafetensors,
  initSharedWeights,
  tinyModelConfig,
  toTorchStateDict,
} from '@fedssl/shared/model';
import { loadConfig } from '../../config/config';
import { CoordinatorKeysService } from '../../keys/coordinator-keys.service';
import { ModelStoreService } from '../model-store.service';
import { ModelExportsService } from './model-exports.service';

const silent = pino({ level: 'silent' });
const model = { ...tinyModelConfig(32), norm: 'batch' as const };
const weights = initSharedWeights(model, 3);
const groupModel = { ...tinyModelConfig(32), norm: 'group' as const };

/** Entry names and the model.json input shape of a tfjs zip (read by Python's zipfile). */
function readTfjsZip(file: string): {
  names: string[];
  inputShape: unknown;
  manifest: unknown;
  format: string;
} {
  const py =
    'import json,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nm=json.loads(z.read("model.json"))\n' +
    'print(json.dumps({"names": z.namelist(), "manifest": json.loads(z.read("manifest.json")), "format": m["format"], ' +
    '"inputShape": m["modelTopology"]["config"]["layers"][0]["config"]["batch_input_shape"]}))';
  return JSON.parse(execFileSync('python3', ['-c', py, file], { encoding: 'utf8' }));
}

describe('ModelExportsService', () => {
  let dir: string;
  let store: ModelStoreService;
  let exportsService: ModelExportsService;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-exports-'));
    const config = loadConfig({ FEDSSL_DATA_DIR: dir });
    const keys = new CoordinatorKeysService(config, silent);
    store = new ModelStoreService(config, keys, { now: () => Date.now() }, silent);
    exportsService = new ModelExportsService(store, keys, silent);
    for (const version of ['run.r1', 'run.r2', 'gn.r1']) {
      const gn = version.startsWith('gn');
      store.publish({
        version,
        runId: gn ? 'gn' : 'run',
        round: Number(version.slice(-1)),
        model: gn ? groupModel : model,
        weights: gn ? initSharedWeights(groupModel, 3) : weights,
        parentVersion: null,
        parentSha256: null,
        sites: [{ siteId: 'site-a', exampleCount: 12 }],
        strategy: 'fedavg',
      });
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('safetensors: torchvision names and the published weights, converted once and then served from the cache', async () => {
    const d = await exportsService.download('run.r1', 'safetensors');
    expect([d.name, d.type]).toEqual(['run.r1.safetensors', 'application/octet-stream']);
    const st = decodeSafetensors(d.data);
    expect(st.tensors).toEqual(toTorchStateDict(model, weights));
    expect(readdirSync(store.exportsDir('run.r1'))).toEqual(['model.safetensors']);
    // Served from the file: a changed cache file is what comes back.
    writeFileSync(join(store.exportsDir('run.r1'), 'model.safetensors'), 'cached');
    expect(Buffer.from((await exportsService.download('run.r1', 'safetensors')).data).toString()).toBe(
      'cached',
    );
  });

  it('tfjs: a zip of the LayersModel, the signed manifest and the model card', async () => {
    const d = await exportsService.download('run.r2', 'tfjs');
    expect([d.name, d.type]).toEqual(['run.r2-tfjs.zip', 'application/zip']);
    const file = join(dir, 'm.zip');
    writeFileSync(file, d.data);
    const out = readTfjsZip(file);
    expect(out.names).toEqual([
      'model.json',
      'weights.bin',
      'manifest.json',
      'model-card.json',
      'MODEL_CARD.md',
    ]);
    expect(out.manifest).toEqual(store.requireManifest('run.r2'));
    expect(out.format).toBe('layers-model');
    expect(out.inputShape).toEqual([null, null, null, 1]);
    // Two concurrent first requests convert once and get the same bytes.
    rmSync(store.exportsDir('run.r2'), { recursive: true });
    const [a, b] = await Promise.all([
      exportsService.download('run.r2', 'tfjs'),
      exportsService.download('run.r2', 'tfjs'),
    ]);
    expect(a.data).toBe(b.data);
  });

  it('tfjs of a group-norm encoder: built for the model input size, or for ?inputSize (cached apart, one extra size kept)', async () => {
    const file = join(dir, 'gn.zip');
    const d = await exportsService.download('gn.r1', 'tfjs');
    expect(d.name).toBe('gn.r1-tfjs.zip');
    writeFileSync(file, d.data);
    expect(readTfjsZip(file).inputShape).toEqual([null, 32, 32, 1]);
    // The model's own size is the default file.
    expect((await exportsService.download('gn.r1', 'tfjs', { inputSize: '32' })).name).toBe('gn.r1-tfjs.zip');

    const big = await exportsService.download('gn.r1', 'tfjs', { inputSize: '48' });
    expect(big.name).toBe('gn.r1-tfjs-48px.zip');
    writeFileSync(file, big.data);
    expect(readTfjsZip(file).inputShape).toEqual([null, 48, 48, 1]);
    expect(readdirSync(store.exportsDir('gn.r1')).sort()).toEqual(['model-tfjs-48px.zip', 'model-tfjs.zip']);
    await exportsService.download('gn.r1', 'tfjs', { inputSize: '64' });
    expect(readdirSync(store.exportsDir('gn.r1')).sort()).toEqual(['model-tfjs-64px.zip', 'model-tfjs.zip']);
  });

  it('inputSize: ignored by batch-norm graphs, refused when malformed, out of range or for another format', async () => {
    expect((await exportsService.download('run.r2', 'tfjs', { inputSize: '48' })).name).toBe(
      'run.r2-tfjs.zip',
    );
    await expect(exportsService.download('gn.r1', 'tfjs', { inputSize: '48px' })).rejects.toThrow(
      'inputSize must be one whole number of pixels, got "48px"',
    );
    await expect(exportsService.download('gn.r1', 'tfjs', { inputSize: ['48', '64'] })).rejects.toThrow(
      'inputSize must be one whole number of pixels, got ["48","64"]',
    );
    await expect(exportsService.download('gn.r1', 'safetensors', { inputSize: '48' })).rejects.toThrow(
      'inputSize applies to the tfjs format only, not safetensors',
    );
    await expect(exportsService.download('gn.r1', 'tfjs', { inputSize: '8' })).rejects.toSatisfy(
      (e) =>
        isFedsslError(e, 'MODEL_CONFIG_INVALID') &&
        (e as Error).message === 'TF.js export input size must be an integer from 16 to 512 pixels, got 8',
    );
  });

  it('card: markdown from the signed manifest, still there after the weights were pruned', async () => {
    store.deleteWeights('run.r1');
    expect(existsSync(store.exportsDir('run.r1'))).toBe(false);
    const d = await exportsService.download('run.r1', 'card');
    expect([d.name, d.type]).toEqual(['run.r1.MODEL_CARD.md', 'text/markdown; charset=utf-8']);
    expect(Buffer.from(d.data).toString()).toContain('# fedssl model run.r1');
    await expect(exportsService.download('run.r1', 'safetensors')).rejects.toSatisfy((e) =>
      isFedsslError(e, 'MODEL_WEIGHTS_NOT_FOUND'),
    );
    await expect(exportsService.download('run.r1', 'onnx')).rejects.toThrow(
      'format "onnx" is not one of tfjs, safetensors, card',
    );
    await expect(exportsService.download('nope', 'card')).rejects.toThrow('no published model version nope');
  });
});
