import { describe, it, expect } from 'vitest';
import { isFedsslError } from '@fedssl/shared/errors';
import type { NamedTensors } from '@fedssl/shared/codec';
import { deltaFromGlobal, fedemaInit } from './fedema';
import { decodeLocalState, encodeLocalState } from './local-state';

const t = (name: string, shape: number[], values: number[]) => ({
  name,
  shape,
  data: Float32Array.from(values),
});
const values = (ts: NamedTensors) => ts.map((x) => Array.from(x.data));

describe('fedemaInit', () => {
  // global − local = (3, 0, 0) and (0, 4): ‖·‖ = 5.
  const global = [t('encoder.conv1.weight', [1, 1, 1, 3], [3, 1, 1]), t('predictor.0.bias', [2], [0, 4])];
  const local = [t('predictor.0.bias', [2], [0, 0]), t('encoder.conv1.weight', [1, 1, 1, 3], [0, 1, 1])];

  it('mixes the previous local model in with μ = λ·‖w_g − w_l‖ (hand computation)', () => {
    const r = fedemaInit(global, local, 0.1);
    expect(r.divergence).toBe(5);
    expect(r.mu).toBeCloseTo(0.5, 12);
    // 0.5·local + 0.5·global, in the global's order.
    expect(r.weights.map((x) => x.name)).toEqual(['encoder.conv1.weight', 'predictor.0.bias']);
    expect(values(r.weights)).toEqual([
      [1.5, 1, 1],
      [0, 2],
    ]);
    expect(r.weights[0]!.shape).toEqual([1, 1, 1, 3]);
  });

  it('caps μ at 1 (keep the local model) and gives the global model for λ = 0', () => {
    const keep = fedemaInit(global, local, 1);
    expect(keep.mu).toBe(1);
    expect(values(keep.weights)).toEqual([
      [0, 1, 1],
      [0, 0],
    ]);
    const replace = fedemaInit(global, local, 0);
    expect(replace.mu).toBe(0);
    expect(values(replace.weights)).toEqual(values(global));
  });

  it('replaces (μ = 0) when there is no previous local model', () => {
    const r = fedemaInit(global, undefined, 3);
    expect(r).toEqual({ weights: global, mu: 0, divergence: 0 });
  });

  it('refuses a previous local model that does not fit, and a bad λ', () => {
    try {
      fedemaInit(global, [local[0]!], 0.1);
      expect.unreachable();
    } catch (e) {
      expect(isFedsslError(e, 'MODEL_WEIGHTS_MISMATCH')).toBe(true);
      expect((e as Error).message).toBe('previous local model has no tensor encoder.conv1.weight [1,1,1,3]');
    }
    expect(() => fedemaInit(global, local, -1)).toThrow(
      'fedema scaler λ must be a finite number ≥ 0, got -1',
    );
  });
});

describe('deltaFromGlobal', () => {
  it('is local − global matched by name, in the local order', () => {
    const global = [t('a', [2], [1, 2]), t('b', [1], [10])];
    const local = [t('b', [1], [7]), t('a', [2], [1.5, 0])];
    const d = deltaFromGlobal(local, global);
    expect(d.map((x) => x.name)).toEqual(['b', 'a']);
    expect(values(d)).toEqual([[-3], [0.5, -2]]);
    expect(() => deltaFromGlobal([t('c', [1], [0])], global)).toThrow(
      'global model has no tensor c of 1 values',
    );
  });
});

describe('local state with the previous online model', () => {
  it('round-trips through encodeLocalState/decodeLocalState', () => {
    const state = {
      target: [t('encoder.conv1.weight', [1, 1, 1, 2], [1, 2])],
      metadataHead: [t('metadata_head.0.bias', [2], [0, 1])],
      metadataClasses: 2,
      online: [t('encoder.conv1.weight', [1, 1, 1, 2], [3, 4]), t('predictor.0.bias', [1], [5])],
    };
    const back = decodeLocalState(encodeLocalState(state));
    expect(back.online!.map((x) => [x.name, Array.from(x.data)])).toEqual([
      ['encoder.conv1.weight', [3, 4]],
      ['predictor.0.bias', [5]],
    ]);
    expect(values(back.target)).toEqual([[1, 2]]);
    expect(decodeLocalState(encodeLocalState({ ...state, online: undefined })).online).toBeUndefined();
  });
});
