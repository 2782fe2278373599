import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import type { ScratchBuffers } from './strategy';

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
 * The stored server state as views, `[prefix][tensor]` (the float32 data of `<prefix>.<name>`
 * for every global tensor, not copied), or null at the first round (no state: zeros).
 * @throws FedsslError STRATEGY_STATE_INVALID when a stored state does not match the model.
 */
export function stateViews(
  strategy: string,
  global: NamedTensors,
  state: NamedTensors | null,
  prefixes: readonly string[],
): Float32Array[][] | null {
  if (!state) return null;
  const expected = prefixes.length * global.length;
  if (state.length !== expected) {
    throw new FedsslError(
      'STRATEGY_STATE_INVALID',
      `${strategy}: stored server state has ${state.length} tensors, expected ${expected}`,
    );
  }
  return prefixes.map((prefix, p) =>
    global.map((g, t) => {
      const s = state[p * global.length + t]!;
      if (s.name !== `${prefix}.${g.name}` || s.data.length !== g.data.length) {
        throw new FedsslError(
          'STRATEGY_STATE_INVALID',
          `${strategy}: stored server state tensor ${s.name}[${s.data.length}] does not match ${prefix}.${g.name}[${g.data.length}]`,
        );
      }
      return s.data;
    }),
  );
}

/** Named tensors `<prefix>.<name>` (the persisted state form) around float32 data laid out like `global`. */
export function namedState(
  global: NamedTensors,
  prefix: string,
  data: readonly Float32Array[],
): NamedTensors {
  return global.map((g, t) => ({ name: `${prefix}.${g.name}`, shape: g.shape.slice(), data: data[t]! }));
}

/**
 * `count` sets of float32 arrays laid out like `global` (`[set][tensor]`), for outputs the
 * caller writes whole. With `buffers`, views of one borrowed buffer (a fresh 50–100 MB per
 * round costs a page fault per 4 KiB page, more than the server step that fills it); whoever
 * is done with them last gives them back (`aggregateRound`, once the state is saved).
 */
export function float32Slots(
  global: NamedTensors,
  count: number,
  buffers?: ScratchBuffers,
): Float32Array[][] {
  if (!buffers)
    return Array.from({ length: count }, () => global.map((g) => new Float32Array(g.data.length)));
  const perSet = global.reduce((n, g) => n + g.data.length, 0);
  const bytes = buffers.acquire(count * perSet * 4);
  let at = bytes.byteOffset;
  return Array.from({ length: count }, () =>
    global.map((g) => {
      const slot = new Float32Array(bytes.buffer, at, g.data.length);
      at += slot.byteLength;
      return slot;
    }),
  );
}
