import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFedsslError } from '../../errors';
import { initSharedWeights } from '../init';
import { resnet18ModelConfig, tinyModelConfig } from '../presets';
import { sharedParamSpecs } from '../spec';
import { decodeSafetensors, encodeSafetensors, toTorchStateDict, transpose } from './index';

const PY = join(__dirname, 'check_safetensors.py');

describe('safetensors writer', () => {
  it('writes the documented layout: u64le header length, JSON header, contiguous F32 data', () => {
    const bytes = encodeSafetensors(
      [
        { name: 'a', shape: [2], data: Float32Array.of(1.5, -2) },
        { name: 'b', shape: [1, 1], data: Float32Array.of(3) },
      ],
      { format: 'pt' },
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
    expect(header).toEqual({
      __metadata__: { format: 'pt' },
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [1, 1], data_offsets: [8, 12] },
    });
    expect(bytes.length).toBe(8 + n + 12);
    expect(new DataView(bytes.buffer).getFloat32(8 + n + 4, true)).toBe(-2);
  });

  it('round-trips any float32 tensors and metadata', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(
          fc.record({
            name: fc.stringMatching(/^[a-z][a-z0-9._]{0,12}$/),
            values: fc.array(fc.float({ noNaN: true }), { maxLength: 12 }),
          }),
          { selector: (t) => t.name, maxLength: 5 },
        ),
        fc.dictionary(fc.stringMatching(/^[a-z]{1,8}$/), fc.string({ maxLength: 20 })),
        (ts, metadata) => {
          const tensors = ts.map((t) => ({
            name: t.name,
            shape: [t.values.length],
            data: Float32Array.from(t.values),
          }));
          const back = decodeSafetensors(encodeSafetensors(tensors, metadata));
          expect(back.metadata).toEqual(metadata);
          expect(back.tensors).toEqual(tensors);
        },
      ),
    );
  });

  it('refuses reserved or duplicate names, bad shapes, and malformed files', () => {
    const d = Float32Array.of(1);
    expect(() => encodeSafetensors([{ name: '__metadata__', shape: [1], data: d }])).toThrow(
      'safetensors: duplicate or reserved tensor name "__metadata__"',
    );
    expect(() => encodeSafetensors([{ name: 'x', shape: [2], data: d }])).toThrow(
      'safetensors: tensor "x" shape [2] has 2 elements, data has 1',
    );
    const good = encodeSafetensors([{ name: 'x', shape: [1], data: d }]);
    try {
      decodeSafetensors(good.subarray(0, good.length - 1));
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'CODEC_MALFORMED')).toBe(true);
    }
  });
});

describe('PyTorch state_dict names', () => {
  it('transposes by a permutation of axes', () => {
    // [2, 3] → [3, 2]
    expect(Array.from(transpose(Float32Array.of(1, 2, 3, 4, 5, 6), [2, 3], [1, 0]))).toEqual([
      1, 4, 2, 5, 3, 6,
    ]);
    // HWIO [1, 2, 1, 2] → OIHW [2, 1, 1, 2]: element (h, w, i, o) goes to (o, i, h, w).
    expect(Array.from(transpose(Float32Array.of(1, 2, 3, 4), [1, 2, 1, 2], [3, 2, 0, 1]))).toEqual([
      1, 3, 2, 4,
    ]);
  });

  it('maps a group-norm ResNet-18 onto nn.GroupNorm names: weight and bias [C], no running statistics', () => {
    const config = { ...resnet18ModelConfig(224, [4, 4, 8, 8, 16]), norm: 'group' as const };
    const sd = toTorchStateDict(config, initSharedWeights(config, 3));
    const names = sd.map((t) => t.name);
    expect(names.slice(0, 4)).toEqual(['conv1.weight', 'bn1.weight', 'bn1.bias', 'layer1.0.conv1.weight']);
    expect(names.some((n) => n.includes('running_'))).toBe(false);
    const byName = new Map(sd.map((t) => [t.name, t]));
    expect(byName.get('layer4.1.bn2.weight')!.shape).toEqual([16]);
    expect(byName.get('layer2.0.downsample.1.bias')!.shape).toEqual([8]);
  });

  it('maps a batch-norm ResNet-18 onto torchvision names with OIHW kernels and [out, in] linear weights', () => {
    const config = { ...resnet18ModelConfig(224, [4, 4, 8, 8, 16]), norm: 'batch' as const };
    const weights = initSharedWeights(config, 3);
    const sd = toTorchStateDict(config, weights);
    const names = sd.map((t) => t.name);
    expect(names.slice(0, 6)).toEqual([
      'conv1.weight',
      'bn1.weight',
      'bn1.bias',
      'bn1.running_mean',
      'bn1.running_var',
      'layer1.0.conv1.weight',
    ]);
    expect(names).toContain('layer2.0.downsample.0.weight');
    expect(names).toContain('layer4.1.bn2.running_var');
    expect(names).toContain('projector.0.weight');
    expect(names).toContain('predictor.3.bias');
    expect(names.some((n) => n.startsWith('encoder.'))).toBe(false);
    const byName = new Map(sd.map((t) => [t.name, t]));
    expect(byName.get('conv1.weight')!.shape).toEqual([4, 1, 7, 7]);
    expect(byName.get('layer2.0.downsample.0.weight')!.shape).toEqual([8, 4, 1, 1]);
    expect(byName.get('projector.0.weight')!.shape).toEqual([1024, 16]);
    // One element by hand: tf conv1 (h=2, w=5, i=0, o=3) is torch conv1[3, 0, 2, 5].
    const tfConv = weights.find((t) => t.name === 'encoder.conv1.weight')!;
    expect(byName.get('conv1.weight')!.data[3 * 49 + 2 * 7 + 5]).toBe(
      tfConv.data[((2 * 7 + 5) * 1 + 0) * 4 + 3],
    );
    // Linear: tf [in=16, out=1024] (i=5, o=7) is torch [7, 5].
    const tfLin = weights.find((t) => t.name === 'projector.0.weight')!;
    expect(byName.get('projector.0.weight')!.data[7 * 16 + 5]).toBe(tfLin.data[5 * 1024 + 7]);
    expect(sd.length).toBe(sharedParamSpecs(config).length);
  });

  it('is read back by an independent Python reader (standard library only)', () => {
    const config = tinyModelConfig(32);
    const sd = toTorchStateDict(config, initSharedWeights(config, 7));
    const dir = mkdtempSync(join(tmpdir(), 'fedssl-st-'));
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, encodeSafetensors(sd, { format: 'pt', 'fedssl.version': 'run-1.r3' }));
    let out: string;
    try {
      out = execFileSync('python3', [PY, file], { encoding: 'utf8' });
    } catch (e) {
      throw new Error(`python3 must be installed to cross-check the safetensors writer: ${String(e)}`);
    }
    const py = JSON.parse(out) as {
      aligned: boolean;
      metadata: Record<string, string>;
      tensors: Record<string, { shape: number[]; first: number; last: number; sum: number }>;
    };
    expect(py.aligned).toBe(true);
    expect(py.metadata).toEqual({ format: 'pt', 'fedssl.version': 'run-1.r3' });
    expect(Object.keys(py.tensors).sort()).toEqual(sd.map((t) => t.name).sort());
    for (const t of sd) {
      const p = py.tensors[t.name]!;
      expect(p.shape).toEqual(t.shape);
      expect(p.first).toBe(t.data[0]);
      expect(p.last).toBe(t.data[t.data.length - 1]);
      const sum = t.data.reduce((s, v) => s + v, 0);
      expect(Math.abs(p.sum - sum)).toBeLessThan(1e-3 * Math.max(1, Math.abs(sum)));
    }
  });
});
