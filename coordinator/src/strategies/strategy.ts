import type { NamedTensors } from '@fedssl/shared/codec';

/**
 * One accepted site update as a strategy sees it. The delta is read on demand (decrypted
 * and validated from its on-disk envelope by the round engine), so a strategy that holds
 * at most one delta at a time keeps memory O(model) however many sites contributed.
 */
export interface UpdateSource {
  readonly siteId: string;
  /** Number of local training examples; weighted strategies weight the delta by it. */
  readonly exampleCount: number;
  /** The validated delta, same tensors (names, shapes, order) as the global model. */
  readDelta(): NamedTensors;
  /**
   * Optional: the strategy is done with the delta {@link readDelta} returned (it will not read
   * it again, and its output keeps no view of it), so its memory can serve the next update.
   */
  release?(): void;
}

/** Memory an aggregation may borrow and give back (the coordinator's plaintext buffer pool). */
export interface ScratchBuffers {
  /** A buffer of exactly `bytes` bytes (8-aligned), whose contents are arbitrary. */
  acquire(bytes: number): Uint8Array;
  /** Gives back what {@link acquire} returned: nothing may use it afterwards. */
  recycle(views: Iterable<ArrayBufferView>): void;
}

/** What a strategy aggregates: the round's base model, its updates and the server state. */
export interface AggregationInput {
  global: NamedTensors;
  /** Accepted updates in a fixed order (siteId order), so results do not depend on arrival order. */
  updates: readonly UpdateSource[];
  /**
   * Server optimizer state saved with the base model version (null at the first round
   * or for stateless strategies).
   */
  state: NamedTensors | null;
  /** A private, empty directory for temporary files (coordinate-wise strategies spill to it). */
  scratchDir: string;
  /**
   * Where to borrow large memory (the float64 sums of the FedAvg fold, the new server state of
   * FedAvgM / FedAdam), when the caller has a pool.
   */
  buffers?: ScratchBuffers;
}

export interface AggregationOutput {
  weights: NamedTensors;
  /**
   * Server state to persist with the new version (null for stateless strategies). May be views
   * of memory borrowed from `input.buffers`: the caller gives it back once saved.
   */
  state: NamedTensors | null;
}

/**
 * An aggregation strategy (Flower-style `aggregate_fit`): new global weights (and server
 * state) from the base weights and the round's accepted updates. One file per strategy,
 * listed in `index.ts`.
 */
export interface Strategy {
  /** Short label recorded in model manifests, e.g. `fedadam` or `median+clip`. */
  readonly name: string;
  /** True when the strategy carries server state from one round to the next. */
  readonly stateful: boolean;
  aggregate(input: AggregationInput): AggregationOutput;
}
