import { aggregateCoordinatewise, DEFAULT_BLOCK_COORDINATES } from './coordinatewise';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';

/** Median of sorted values: the middle one, or the mean of the two middle ones. */
export function medianOfSorted(sorted: Float64Array): number {
  const n = sorted.length;
  const h = n >> 1;
  return n % 2 === 1 ? sorted[h]! : (sorted[h - 1]! + sorted[h]!) / 2;
}

/**
 * Coordinate-wise median of the deltas (Yin et al. 2018), unweighted: each coordinate of
 * the new global is global + median over sites. Robust to fewer than half of the sites
 * sending arbitrary values. Memory O(model + block × sites) (see aggregateCoordinatewise).
 */
export class MedianStrategy implements Strategy {
  readonly name = 'median';
  readonly stateful = false;

  constructor(private readonly blockCoordinates = DEFAULT_BLOCK_COORDINATES) {}

  aggregate(input: AggregationInput): AggregationOutput {
    return {
      weights: aggregateCoordinatewise(this.name, input, medianOfSorted, this.blockCoordinates),
      state: null,
    };
  }
}
