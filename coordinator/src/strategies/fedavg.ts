import type { NamedTensors } from '@fedssl/shared/codec';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';
import { checkDeltaLayout, checkExampleCount, requireUpdates } from './tensors';

/**
 * The example-weighted mean of the round's deltas, Σ wᵢ·Δᵢ / Σ wᵢ with wᵢ = exampleCount,
 * in float64. Streams: one delta is held at a time, so memory is O(model) for any number
 * of sites. Sums run in the given (siteId) order, which makes the result reproducible.
 */
export function weightedMeanDelta(input: Pick<AggregationInput, 'global' | 'updates'>): Float64Array[] {
  const { global, updates } = input;
  const sums = global.map((t) => new Float64Array(t.data.length));
  let total = 0;
  for (const u of updates) {
    checkExampleCount(u.exampleCount);
    const delta = u.readDelta();
    checkDeltaLayout(global, delta);
    const w = u.exampleCount;
    for (let t = 0; t < delta.length; t++) {
      const sum = sums[t]!;
      const data = delta[t]!.data;
      for (let i = 0; i < data.length; i++) sum[i]! += w * data[i]!;
    }
    total += w;
  }
  for (const sum of sums) for (let i = 0; i < sum.length; i++) sum[i]! /= total;
  return sums;
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
    return { weights: applyStep(input.global, weightedMeanDelta(input)), state: null };
  }
}
