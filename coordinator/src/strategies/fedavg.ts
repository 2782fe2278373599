import type { NamedTensors } from '@fedssl/shared/codec';
import type { AggregationInput, AggregationOutput, ScratchBuffers, Strategy } from './strategy';
import { checkDeltaLayout, checkExampleCount, requireUpdates } from './tensors';

/** Deltas folded in one pass over the sums (at most this many are held at a time). */
const FOLD_GROUP = 4;

/**
 * The example-weighted mean of the round's deltas, Σ (wᵢ / Σ w)·Δᵢ with wᵢ = exampleCount,
 * in float64. Streams: at most {@link FOLD_GROUP} deltas are held at a time, each released as
 * soon as it is folded, so memory is O(model) for any number of sites. Sums run in the given
 * (siteId) order, which makes the result reproducible.
 *
 * Float64 sums keep the mean of many float32 deltas correctly rounded once it is added to
 * the float32 global; a float32 sum would lose a bit or more per site. The weights are
 * normalized before the fold (the example counts are known up front), so there is no
 * division pass.
 */
export function weightedMeanDelta(
  input: Pick<AggregationInput, 'global' | 'updates' | 'buffers'>,
): Float64Array[] {
  const { global, updates } = input;
  let total = 0;
  for (const u of updates) {
    checkExampleCount(u.exampleCount);
    total += u.exampleCount;
  }
  const sums = allocateSums(global, input.buffers);
  if (updates.length === 0) for (const s of sums) s.fill(0);
  try {
    foldAll(input, sums, total);
  } catch (e) {
    // A delta refused while read: no aggregate comes of these sums, so the pool has them back.
    input.buffers?.recycle(sums);
    throw e;
  }
  return sums;
}

function foldAll(
  { global, updates }: Pick<AggregationInput, 'global' | 'updates'>,
  sums: Float64Array[],
  total: number,
): void {
  for (let start = 0; start < updates.length; start += FOLD_GROUP) {
    const group = updates.slice(start, start + FOLD_GROUP);
    const deltas = group.map((u) => {
      const delta = u.readDelta();
      checkDeltaLayout(global, delta);
      return delta;
    });
    const weights = group.map((u) => u.exampleCount / total);
    for (let t = 0; t < sums.length; t++) {
      foldInto(
        sums[t]!,
        deltas.map((d) => d[t]!.data),
        weights,
        start === 0,
      );
    }
    for (const u of group) u.release?.();
  }
}

/**
 * Float64 sums shaped like `global`. With `buffers`, views of one borrowed buffer: a fresh
 * 100 MB per round costs a page fault per 4 KiB page, about as much as folding four deltas
 * into it. Its old contents do not matter: the first group writes every sum.
 */
function allocateSums(global: NamedTensors, buffers: ScratchBuffers | undefined): Float64Array[] {
  if (!buffers) return global.map((t) => new Float64Array(t.data.length));
  const count = global.reduce((n, t) => n + t.data.length, 0);
  const bytes = buffers.acquire(count * 8);
  let at = bytes.byteOffset;
  return global.map((t) => {
    const sum = new Float64Array(bytes.buffer, at, t.data.length);
    at += sum.byteLength;
    return sum;
  });
}

/**
 * `sum[i] = (sum[i]) + w₀·x₀[i] + w₁·x₁[i] + …`, evaluated left to right: the same operations
 * in the same order as adding the deltas one at a time (JavaScript neither fuses nor
 * reorders them), so grouping changes no bit; it reads and writes each float64 sum once per
 * group instead of once per delta. The first group stores instead of adding to the zeros, so
 * fresh sums are written once and never read back from untouched pages.
 */
function foldInto(sum: Float64Array, xs: Float32Array[], ws: number[], first: boolean): void {
  const n = sum.length;
  const [a, b, c, d] = xs as [Float32Array, Float32Array, Float32Array, Float32Array];
  const [wa, wb, wc, wd] = ws as [number, number, number, number];
  switch (xs.length) {
    case 1:
      if (first) for (let i = 0; i < n; i++) sum[i] = wa * a[i]!;
      else for (let i = 0; i < n; i++) sum[i] = sum[i]! + wa * a[i]!;
      break;
    case 2:
      if (first) for (let i = 0; i < n; i++) sum[i] = wa * a[i]! + wb * b[i]!;
      else for (let i = 0; i < n; i++) sum[i] = sum[i]! + wa * a[i]! + wb * b[i]!;
      break;
    case 3:
      if (first) for (let i = 0; i < n; i++) sum[i] = wa * a[i]! + wb * b[i]! + wc * c[i]!;
      else for (let i = 0; i < n; i++) sum[i] = sum[i]! + wa * a[i]! + wb * b[i]! + wc * c[i]!;
      break;
    default:
      if (first) for (let i = 0; i < n; i++) sum[i] = wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
      else for (let i = 0; i < n; i++) sum[i] = sum[i]! + wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
  }
}

/** `global + factor·step` as new float32 tensors. */
export function applyStep(global: NamedTensors, step: Float64Array[], factor = 1): NamedTensors {
  return global.map((g, t) => {
    const s = step[t]!;
    const data = new Float32Array(g.data.length);
    for (let i = 0; i < data.length; i++) data[i] = g.data[i]! + factor * s[i]!;
    return { name: g.name, shape: g.shape.slice(), data };
  });
}

/**
 * FedAvg (McMahan et al. 2017) over deltas: new global = global + Σ wᵢ·Δᵢ / Σ wᵢ with
 * wᵢ = exampleCount. Running sums are float64, memory O(model). The sum is still
 * order-dependent in the last float64 bit, which is why the engine always passes updates
 * in siteId order.
 */
export class FedAvgStrategy implements Strategy {
  readonly name = 'fedavg';
  readonly stateful = false;

  aggregate(input: AggregationInput): AggregationOutput {
    requireUpdates(this.name, input.updates.length);
    const mean = weightedMeanDelta(input);
    const weights = applyStep(input.global, mean);
    input.buffers?.recycle(mean);
    return { weights, state: null };
  }
}
