import { describe, expect, it } from 'vitest';
import { isFedsslError } from '../errors';
import { modelConfigSchema } from './config';
import { countParams, describeModel, featureDim, sharedParamSpecs, targetParamSpecs } from './spec';
import { initSharedWeights } from './init';
import { resnet18ModelConfig, tinyModelConfig } from './presets';

const get = (specs: ReturnType<typeof describeModel>, name: string) => {
  const s = specs.find((x) => x.name === name);
  if (!s) throw new Error(`no ${name}`);
  return s;
};

describe('describeModel', () => {
  it('declares the tiny ResNet with a CIFAR stem at 32 px', () => {
    const specs = describeModel(tinyModelConfig(32), { metadataClasses: 5 });
    expect(get(specs, 'encoder.conv1.weight').shape).toEqual([3, 3, 1, 16]);
    expect(get(specs, 'encoder.layer1.0.conv1.weight').shape).toEqual([3, 3, 16, 16]);
    expect(specs.some((s) => s.name === 'encoder.layer1.0.downsample.0.weight')).toBe(false);
    expect(get(specs, 'encoder.layer2.0.downsample.0.weight').shape).toEqual([1, 1, 16, 32]);
    expect(get(specs, 'encoder.layer3.0.conv2.weight').shape).toEqual([3, 3, 64, 64]);
    expect(get(specs, 'projector.0.weight').shape).toEqual([64, 128]);
    expect(get(specs, 'projector.3.weight').shape).toEqual([128, 64]);
    expect(get(specs, 'predictor.0.weight').shape).toEqual([64, 128]);
    expect(get(specs, 'metadata_head.3.weight').shape).toEqual([64, 5]);
    expect(featureDim(tinyModelConfig(32))).toBe(64);
  });

  it('uses the 7×7 stride-2 stem from 96 px on', () => {
    expect(get(describeModel(tinyModelConfig(64)), 'encoder.conv1.weight').shape).toEqual([3, 3, 1, 16]);
    expect(get(describeModel(tinyModelConfig(96)), 'encoder.conv1.weight').shape).toEqual([7, 7, 1, 16]);
  });

  it('matches torchvision ResNet-18/50 parameter counts (1-channel conv1, no fc)', () => {
    const trainableEncoder = (c: Parameters<typeof describeModel>[0]) =>
      countParams(describeModel(c).filter((s) => s.part === 'encoder' && s.trainable));
    // GroupNorm and BatchNorm have the same affine parameters.
    for (const norm of ['group', 'batch'] as const) {
      // torchvision resnet18: 11,689,512 − fc 513,000 − conv1's two extra input channels 6,272.
      expect(trainableEncoder({ ...resnet18ModelConfig(224), norm })).toBe(11_170_240);
      // torchvision resnet50: 25,557,032 − fc 2,049,000 − 6,272.
      expect(trainableEncoder(modelConfigSchema.parse({ arch: 'resnet50', inputSize: 224, norm }))).toBe(
        23_501_760,
      );
    }
    expect(featureDim(modelConfigSchema.parse({ arch: 'resnet50', inputSize: 224 }))).toBe(2048);
    const r18 = describeModel({ ...resnet18ModelConfig(224), norm: 'batch' });
    expect(get(r18, 'encoder.layer4.1.bn2.running_var').trainable).toBe(false);
    expect(get(r18, 'encoder.layer4.0.downsample.0.weight').shape).toEqual([1, 1, 256, 512]);
  });

  it('accepts smaller resnet18 widths', () => {
    const c = resnet18ModelConfig(64, [8, 8, 16, 32, 64]);
    const specs = describeModel(c);
    expect(get(specs, 'encoder.conv1.weight').shape).toEqual([3, 3, 1, 8]);
    expect(get(specs, 'encoder.layer4.1.conv2.weight').shape).toEqual([3, 3, 64, 64]);
    expect(featureDim(c)).toBe(64);
  });

  it('has unique names and keeps the metadata head site-local', () => {
    for (const c of [tinyModelConfig(32), resnet18ModelConfig(128, [8, 8, 16, 32, 64])]) {
      const specs = describeModel(c, { metadataClasses: 7 });
      expect(new Set(specs.map((s) => s.name)).size).toBe(specs.length);
      for (const s of specs) expect(s.shared).toBe(s.part !== 'metadataHead');
      const shared = sharedParamSpecs(c);
      expect(shared.some((s) => s.name.startsWith('metadata_head'))).toBe(false);
      expect(shared.map((s) => s.name)).toEqual(specs.filter((s) => s.shared).map((s) => s.name));
      expect(targetParamSpecs(c).every((s) => s.part === 'encoder' || s.part === 'projector')).toBe(true);
    }
    expect(describeModel(tinyModelConfig(32)).some((s) => s.part === 'metadataHead')).toBe(false);
  });

  it('uses group norm by default, which declares no running statistics', () => {
    const c = modelConfigSchema.parse({ arch: 'tiny', inputSize: 32 });
    expect(c.norm).toBe('group');
    expect(describeModel(c).some((s) => s.name.endsWith('running_mean'))).toBe(false);
    const batch = modelConfigSchema.parse({ arch: 'tiny', inputSize: 32, norm: 'batch' });
    expect(get(describeModel(batch), 'encoder.bn1.running_mean').trainable).toBe(false);
  });

  it('rejects widths of the wrong length with MODEL_CONFIG_INVALID', () => {
    const c = modelConfigSchema.parse({ arch: 'tiny', inputSize: 32, widths: [8, 16] });
    let err: unknown;
    try {
      describeModel(c);
    } catch (e) {
      err = e;
    }
    expect(isFedsslError(err, 'MODEL_CONFIG_INVALID')).toBe(true);
  });
});

describe('initSharedWeights', () => {
  const config = tinyModelConfig(32);

  it('is deterministic for a seed and differs across seeds', () => {
    const a = initSharedWeights(config, 42);
    const b = initSharedWeights(config, 42);
    const c = initSharedWeights(config, 43);
    expect(a.map((t) => t.name)).toEqual(sharedParamSpecs(config).map((s) => s.name));
    for (let i = 0; i < a.length; i++) {
      expect(Buffer.from(a[i]!.data.buffer).equals(Buffer.from(b[i]!.data.buffer))).toBe(true);
    }
    const conv = (w: typeof a) => w.find((t) => t.name === 'encoder.layer1.0.conv1.weight')!.data;
    expect(Array.from(conv(a))).not.toEqual(Array.from(conv(c)));
  });

  it('pins the first values (bit-identical on every machine)', () => {
    const first = initSharedWeights(config, 1)[0]!.data;
    // Recorded once; a change here means every coordinator's version 0 changes.
    expect(Array.from(first.slice(0, 3)).map((v) => v.toFixed(6))).toEqual(PINNED);
  });

  it('follows the declared initialisers (batch norm: with running statistics)', () => {
    const w = initSharedWeights({ ...config, norm: 'batch' }, 7);
    const byName = new Map(w.map((t) => [t.name, t.data]));
    expect(Array.from(byName.get('encoder.bn1.weight')!).every((v) => v === 1)).toBe(true);
    expect(Array.from(byName.get('encoder.bn1.running_mean')!).every((v) => v === 0)).toBe(true);
    const conv = byName.get('encoder.layer3.0.conv1.weight')!; // fanIn 3·3·32
    const std = Math.sqrt(conv.reduce((s, v) => s + v * v, 0) / conv.length);
    expect(std).toBeGreaterThan(Math.sqrt(2 / 288) * 0.9);
    expect(std).toBeLessThan(Math.sqrt(2 / 288) * 1.1);
    const lin = byName.get('projector.0.weight')!;
    const limit = Math.sqrt(6 / (64 + 128));
    expect(Math.max(...Array.from(lin).map(Math.abs))).toBeLessThanOrEqual(limit);
  });
});

const PINNED = ['0.662012', '0.573112', '-0.240594'];
