import { FedsslError } from '../errors';
import type { NamedTensor, NamedTensors } from './types';

/**
 * Numeric helpers over ordered named tensors, used to form deltas on the site and to
 * validate them on the coordinator. Accumulations run in float64.
 */

function shapeString(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/**
 * Throws MODEL_WEIGHTS_MISMATCH unless `a` and `b` have the same tensors (names, shapes,
 * order), naming the first offending tensor.
 */
export function assertSameLayout(a: NamedTensors, b: NamedTensors): void {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined || y === undefined) {
      const present = (x ?? y) as NamedTensor;
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `tensor lists differ in length (${a.length} vs ${b.length}); first unmatched tensor is #${i} "${present.name}"`,
      );
    }
    if (
      x.name !== y.name ||
      shapeString(x.shape) !== shapeString(y.shape) ||
      x.data.length !== y.data.length
    ) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `tensor #${i} differs: "${x.name}" ${shapeString(x.shape)} vs "${y.name}" ${shapeString(y.shape)}`,
      );
    }
  }
}

function zipWith(a: NamedTensors, b: NamedTensors, f: (x: number, y: number) => number): NamedTensors {
  assertSameLayout(a, b);
  return a.map((x, i) => {
    const yd = (b[i] as NamedTensor).data;
    const xd = x.data;
    const out = new Float32Array(xd.length);
    for (let j = 0; j < xd.length; j++) out[j] = f(xd[j] as number, yd[j] as number);
    return { name: x.name, shape: [...x.shape], data: out };
  });
}

/** Element-wise `a − b` (e.g. local weights − global weights = the update delta). */
export function subtract(a: NamedTensors, b: NamedTensors): NamedTensors {
  return zipWith(a, b, (x, y) => x - y);
}

/** Element-wise `a + b` (e.g. global weights + aggregated delta). */
export function add(a: NamedTensors, b: NamedTensors): NamedTensors {
  return zipWith(a, b, (x, y) => x + y);
}

/** Every tensor multiplied by `factor` (e.g. norm clipping). */
export function scale(tensors: NamedTensors, factor: number): NamedTensors {
  return tensors.map((t) => {
    const out = new Float32Array(t.data.length);
    for (let j = 0; j < out.length; j++) out[j] = (t.data[j] as number) * factor;
    return { name: t.name, shape: [...t.shape], data: out };
  });
}

/** Global L2 norm over all tensors, accumulated in float64 (NaN if any value is NaN). */
export function l2Norm(tensors: NamedTensors): number {
  let sum = 0;
  for (const t of tensors) sum += sumOfSquares(t.data);
  return Math.sqrt(sum);
}

/**
 * Σ x² in float64 over four interleaved partial sums: one running sum waits on the latency
 * of each addition, four keep the adder busy (about 2× faster on a 12.5 M-value update).
 */
function sumOfSquares(d: Float32Array): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n4 = d.length - (d.length % 4);
  let j = 0;
  for (; j < n4; j += 4) {
    const a = d[j]!;
    const b = d[j + 1]!;
    const c = d[j + 2]!;
    const e = d[j + 3]!;
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += e * e;
  }
  for (; j < d.length; j++) s0 += d[j]! * d[j]!;
  return s0 + s1 + (s2 + s3);
}

/** True iff no tensor holds NaN or ±Infinity. */
export function allFinite(tensors: NamedTensors): boolean {
  for (const t of tensors) {
    const d = t.data;
    for (let j = 0; j < d.length; j++) {
      // v - v is 0 for finite v and NaN for NaN/±Infinity: one comparison per element.
      const v = d[j] as number;
      if (v - v !== 0) return false;
    }
  }
  return true;
}

/** Total number of scalar parameters. */
export function parameterCount(tensors: NamedTensors): number {
  return tensors.reduce((n, t) => n + t.data.length, 0);
}
