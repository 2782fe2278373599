import { FedsslError } from '@fedssl/shared/errors';
import { aggregateCoordinatewise, DEFAULT_BLOCK_COORDINATES } from './coordinatewise';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';

export interface TrimmedMeanOptions {
  /** β: fraction of the updates dropped on EACH side per coordinate, in [0, 0.5). */
  beta: number;
}

/**
 * Coordinate-wise β-trimmed mean (Yin et al. 2018), unweighted: per coordinate, drop the
 * ⌊β·n⌋ smallest and ⌊β·n⌋ largest deltas and average the rest. Memory
 * O(model + block × sites).
 */
export class TrimmedMeanStrategy implements Strategy {
  readonly name = 'trimmed-mean';
  readonly stateful = false;

  constructor(
    private readonly options: TrimmedMeanOptions,
    private readonly blockCoordinates = DEFAULT_BLOCK_COORDINATES,
  ) {
    if (!(options.beta >= 0 && options.beta < 0.5)) {
      throw new FedsslError(
        'RUN_CONFIG_INVALID',
        `trimmed-mean beta must be in [0, 0.5), got ${options.beta}`,
      );
    }
  }

  aggregate(input: AggregationInput): AggregationOutput {
    const n = input.updates.length;
    const k = Math.floor(this.options.beta * n);
    const kept = n - 2 * k;
    const reduce = (sorted: Float64Array): number => {
      let s = 0;
      for (let i = k; i < n - k; i++) s += sorted[i]!;
      return s / kept;
    };
    return {
      weights: aggregateCoordinatewise(this.name, input, reduce, this.blockCoordinates),
      state: null,
    };
  }
}
