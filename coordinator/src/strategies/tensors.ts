import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';

/** Throws MODEL_WEIGHTS_MISMATCH unless `delta` has exactly the tensors of `global`. */
export function checkDeltaLayout(global: NamedTensors, delta: NamedTensors, what = 'delta'): void {
  if (delta.length !== global.length) {
    throw new FedsslError(
      'MODEL_WEIGHTS_MISMATCH',
      `${what} has ${delta.length} tensors, global has ${global.length}`,
    );
  }
  for (let t = 0; t < global.length; t++) {
    const g = global[t]!;
    const d = delta[t]!;
    if (d.name !== g.name || d.data.length !== g.data.length) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `${what} tensor ${t} is ${d.name}[${d.data.length}], expected ${g.name}[${g.data.length}]`,
      );
    }
  }
}

export function checkExampleCount(exampleCount: number): void {
  if (!Number.isFinite(exampleCount) || exampleCount <= 0) {
    throw new FedsslError(
      'UPDATE_EXAMPLE_COUNT_INVALID',
      `exampleCount must be a positive number, got ${exampleCount}`,
    );
  }
}

export function requireUpdates(name: string, count: number): void {
  if (count === 0) {
    throw new FedsslError('RUN_INVALID_STATE', `${name}: nothing to aggregate without any update`);
  }
}

/**
 * Server state tensors `<prefix>.<name>` for every global tensor, zero when `state` is null.
 * @throws FedsslError STRATEGY_STATE_INVALID when a stored state does not match the model.
 */
export function stateSlots(
  strategy: string,
  global: NamedTensors,
  state: NamedTensors | null,
  prefixes: readonly string[],
): Float64Array[][] {
  const expected = prefixes.length * global.length;
  if (state && state.length !== expected) {
    throw new FedsslError(
      'STRATEGY_STATE_INVALID',
      `${strategy}: stored server state has ${state.length} tensors, expected ${expected}`,
    );
  }
  return prefixes.map((prefix, p) =>
    global.map((g, t) => {
      const out = new Float64Array(g.data.length);
      if (state) {
        const s = state[p * global.length + t]!;
        if (s.name !== `${prefix}.${g.name}` || s.data.length !== g.data.length) {
          throw new FedsslError(
            'STRATEGY_STATE_INVALID',
            `${strategy}: stored server state tensor ${s.name}[${s.data.length}] does not match ${prefix}.${g.name}[${g.data.length}]`,
          );
        }
        for (let i = 0; i < out.length; i++) out[i] = s.data[i]!;
      }
      return out;
    }),
  );
}

/** Float64 slots back to float32 named tensors `<prefix>.<name>` (the persisted form). */
export function slotsToState(
  global: NamedTensors,
  prefixes: readonly string[],
  slots: Float64Array[][],
): NamedTensors {
  return prefixes.flatMap((prefix, p) =>
    global.map((g, t) => ({
      name: `${prefix}.${g.name}`,
      shape: g.shape.slice(),
      data: Float32Array.from(slots[p]![t]!),
    })),
  );
}
