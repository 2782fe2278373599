import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll } from 'vitest';
import type { NamedTensors } from '@fedssl/shared/codec';
import type { AggregationInput, UpdateSource } from './strategy';

/** Test helpers shared by the strategy tests (not a test file itself). */

export const SHAPES = [
  { name: 'a.weight', shape: [2, 3] },
  { name: 'a.bias', shape: [3] },
];

export function tensors(values: readonly (readonly number[])[]): NamedTensors {
  return SHAPES.map((s, i) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: Float32Array.from(values[i]!),
  }));
}

/** Plain nested arrays of a tensor list, for comparisons. */
export function plain(t: NamedTensors): number[][] {
  return t.map((x) => Array.from(x.data));
}

export interface PlainUpdate {
  values: number[][];
  exampleCount: number;
}

/** In-memory update sources that count how often each delta is read. */
export function sources(updates: readonly PlainUpdate[], reads: number[] = []): UpdateSource[] {
  return updates.map((u, k) => ({
    siteId: `site-${String(k).padStart(3, '0')}`,
    exampleCount: u.exampleCount,
    readDelta: () => {
      reads[k] = (reads[k] ?? 0) + 1;
      return tensors(u.values);
    },
  }));
}

let root: string | null = null;
// Registered while the importing test file is collected: its scratch dirs go with it.
afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
  root = null;
});

/** A fresh empty directory, removed after the test file. */
export function scratch(): string {
  root ??= mkdtempSync(join(tmpdir(), 'fedssl-strategy-'));
  return mkdtempSync(join(root, 's-'));
}

export function input(
  global: number[][],
  updates: readonly PlainUpdate[],
  state: NamedTensors | null = null,
): AggregationInput {
  return { global: tensors(global), updates: sources(updates), state, scratchDir: scratch() };
}

export const f32 = fc.float({ min: -10, max: 10, noNaN: true, noDefaultInfinity: true }).map(Math.fround);
export const tensorValues = fc
  .tuple(fc.array(f32, { minLength: 6, maxLength: 6 }), fc.array(f32, { minLength: 3, maxLength: 3 }))
  .map(([a, b]) => [a, b]);
export const update = fc.record({
  values: tensorValues,
  exampleCount: fc.integer({ min: 1, max: 100_000 }),
});

/** `|a − b| ≤ tol·max(1, |b|)` element-wise, with a message naming the first offender. */
export function expectClose(actual: number[][], expected: number[][], tol = 1e-5): void {
  actual.forEach((row, i) =>
    row.forEach((v, j) => {
      const e = expected[i]![j]!;
      if (!(Math.abs(v - e) <= tol * Math.max(1, Math.abs(e)))) {
        throw new Error(`tensor ${i}[${j}]: got ${v}, expected ${e}`);
      }
    }),
  );
}
