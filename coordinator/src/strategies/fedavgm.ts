import { applyStep, weightedMeanDelta } from './fedavg';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';
import { requireUpdates, slotsToState, stateSlots } from './tensors';

export interface FedAvgMOptions {
  /** η: server learning rate applied to the momentum buffer. */
  serverLearningRate: number;
  /** β: server momentum. */
  serverMomentum: number;
}

const PREFIXES = ['momentum'] as const;

/**
 * FedAvgM (Hsu et al. 2019, "Measuring the effects of non-identical data distribution"):
 * server momentum over the FedAvg pseudo-gradient Δ = Σ wᵢ·Δᵢ / Σ wᵢ:
 *   v ← β·v + Δ,   w ← w + η·v
 * (Flower writes the same with pseudo-gradient w − w_avg = −Δ and `w − η·v`). The
 * momentum buffer v is server state, persisted as float32 with each published version.
 */
export class FedAvgMStrategy implements Strategy {
  readonly name = 'fedavgm';
  readonly stateful = true;

  constructor(private readonly options: FedAvgMOptions) {}

  aggregate(input: AggregationInput): AggregationOutput {
    requireUpdates(this.name, input.updates.length);
    const { serverLearningRate: eta, serverMomentum: beta } = this.options;
    const [v] = stateSlots(this.name, input.global, input.state, PREFIXES) as [Float64Array[]];
    const mean = weightedMeanDelta(input);
    // Round v through float32 first: the persisted state is float32, and the weights must
    // be computed from exactly what the next round (or a restarted coordinator) reads back.
    const stored = v.map((vt, t) => {
      const d = mean[t]!;
      const out = new Float64Array(vt.length);
      for (let i = 0; i < vt.length; i++) out[i] = Math.fround(beta * vt[i]! + d[i]!);
      return out;
    });
    return {
      weights: applyStep(input.global, stored, eta),
      state: slotsToState(input.global, PREFIXES, [stored]),
    };
  }
}
