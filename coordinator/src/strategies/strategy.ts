import type { NamedTensors } from '@fedssl/shared/codec';

/** One accepted site update as a strategy sees it: a weight delta and its example count. */
export interface StrategyUpdate {
  delta: NamedTensors;
  /** Number of local training examples; FedAvg weights the delta by it. */
  exampleCount: number;
}

/**
 * An aggregation strategy (Flower-style): the round engine calls `begin` with the current
 * global weights, then `accumulate` once per accepted update in a fixed order (siteId
 * order), then `finish` to obtain the next global weights. A strategy keeps O(model)
 * state so that updates can be streamed in one at a time from disk.
 */
export interface Strategy {
  readonly name: string;
  begin(global: NamedTensors): void;
  accumulate(update: StrategyUpdate): void;
  /** The new global weights; the strategy is reset and must be `begin`-ed again before reuse. */
  finish(): NamedTensors;
}

/** Options shared by every strategy factory (strategies ignore what they do not use). */
export interface StrategyOptions {
  [key: string]: unknown;
}
