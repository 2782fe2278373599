import { closeSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { NamedTensors } from '@fedssl/shared/codec';
import type { AggregationInput } from './strategy';
import { checkDeltaLayout, requireUpdates } from './tensors';

/** Coordinates per block: 64 Ki float32 = 256 KiB per update held in memory at a time. */
export const DEFAULT_BLOCK_COORDINATES = 64 * 1024;

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Writes each update's validated delta once, as raw float32 coordinates (tensors
 * concatenated in model order), to its own file in `dir`. Only one delta is in memory at a
 * time; the files are then read back block by block.
 */
function spill(input: AggregationInput, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  return input.updates.map((u, k) => {
    const delta = u.readDelta();
    checkDeltaLayout(input.global, delta);
    const file = join(dir, `update-${k}.f32`);
    const fd = openSync(file, 'w', 0o600);
    try {
      for (const t of delta) {
        const bytes = bytesOf(t.data);
        let off = 0;
        while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
      }
    } finally {
      closeSync(fd);
    }
    u.release?.();
    return file;
  });
}

function readFully(fd: number, into: Uint8Array, position: number): void {
  let got = 0;
  while (got < into.length) {
    const r = readSync(fd, into, got, into.length - got, position + got);
    if (r === 0) throw new Error(`spilled update ended early at byte ${position + got}`);
    got += r;
  }
}

/**
 * Coordinate-wise aggregation with memory O(model + block × sites): every update is spilled
 * once to a plaintext file in `input.scratchDir`, then for each block of coordinates the
 * block of every update is read back, and `reduce` turns the n values of one coordinate
 * (sorted ascending, in float64) into the aggregated delta. Returns global + that delta.
 * Sorting makes the result independent of the order of the updates.
 */
export function aggregateCoordinatewise(
  name: string,
  input: AggregationInput,
  reduce: (sorted: Float64Array) => number,
  blockCoordinates = DEFAULT_BLOCK_COORDINATES,
): NamedTensors {
  requireUpdates(name, input.updates.length);
  const dir = join(input.scratchDir, `${name}-spill`);
  const n = input.updates.length;
  try {
    const files = spill(input, dir);
    const fds = files.map((f) => openSync(f, 'r'));
    try {
      const blocks = files.map(() => new Float32Array(blockCoordinates));
      const column = new Float64Array(n);
      let flat = 0;
      return input.global.map((g) => {
        const out = new Float32Array(g.data.length);
        for (let start = 0; start < out.length; start += blockCoordinates) {
          const len = Math.min(blockCoordinates, out.length - start);
          for (let k = 0; k < n; k++) {
            readFully(fds[k]!, bytesOf(blocks[k]!.subarray(0, len)), (flat + start) * 4);
          }
          for (let i = 0; i < len; i++) {
            // Insertion sort: n is the number of sites (tens), faster than a generic sort call.
            for (let k = 0; k < n; k++) {
              const x = blocks[k]![i]!;
              let j = k - 1;
              while (j >= 0 && column[j]! > x) {
                column[j + 1] = column[j]!;
                j--;
              }
              column[j + 1] = x;
            }
            out[start + i] = g.data[start + i]! + reduce(column);
          }
        }
        flat += out.length;
        return { name: g.name, shape: g.shape.slice(), data: out };
      });
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
