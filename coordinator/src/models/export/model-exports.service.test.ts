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
const model = tinyModelConfig(32);
const weights = initSharedWeights(model, 3);

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
    for (const version of ['run.r1', 'run.r2']) {
      store.publish({
        version,
        runId: 'run',
        round: Number(version.slice(-1)),
        model,
        weights,
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
    const py =
      'import json,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nprint(json.dumps({"names": z.namelist(), "manifest": json.loads(z.read("manifest.json")), "format": json.loads(z.read("model.json"))["format"]}))';
    const out = JSON.parse(execFileSync('python3', ['-c', py, file], { encoding: 'utf8' }));
    expect(out.names).toEqual([
      'model.json',
      'weights.bin',
      'manifest.json',
      'model-card.json',
      'MODEL_CARD.md',
    ]);
    expect(out.manifest).toEqual(store.requireManifest('run.r2'));
    expect(out.format).toBe('layers-model');
    // Two concurrent first requests convert once and get the same bytes.
    rmSync(store.exportsDir('run.r2'), { recursive: true });
    const [a, b] = await Promise.all([
      exportsService.download('run.r2', 'tfjs'),
      exportsService.download('run.r2', 'tfjs'),
    ]);
    expect(a.data).toBe(b.data);
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
