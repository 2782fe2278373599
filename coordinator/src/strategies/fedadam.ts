import { applyStep, weightedMeanDelta } from './fedavg';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';
import { requireUpdates, slotsToState, stateSlots } from './tensors';

export interface FedAdamOptions {
  /** η: server learning rate. */
  serverLearningRate: number;
  /** β₁: decay of the first moment. */
  beta1: number;
  /** β₂: decay of the second moment. */
  beta2: number;
  /** τ: adaptivity (added to √v; the paper's ε). */
  tau: number;
}

const PREFIXES = ['m', 'v'] as const;

/**
 * FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2) over
 * the FedAvg pseudo-gradient Δ = Σ wᵢ·Δᵢ / Σ wᵢ:
 *   m ← β₁·m + (1 − β₁)·Δ
 *   v ← β₂·v + (1 − β₂)·Δ²
 *   w ← w + η · m / (√v + τ)
 * Without bias correction, as in the paper. m and v are server state, persisted as
 * float32 with each published version; the step is computed from the float32-rounded
 * values so that a restarted coordinator produces bit-identical weights.
 */
export class FedAdamStrategy implements Strategy {
  readonly name = 'fedadam';
  readonly stateful = true;

  constructor(private readonly options: FedAdamOptions) {}

  aggregate(input: AggregationInput): AggregationOutput {
    requireUpdates(this.name, input.updates.length);
    const { serverLearningRate: eta, beta1, beta2, tau } = this.options;
    const [m, v] = stateSlots(this.name, input.global, input.state, PREFIXES) as [
      Float64Array[],
      Float64Array[],
    ];
    const delta = weightedMeanDelta(input);
    const step = delta.map((d, t) => {
      const mt = m[t]!;
      const vt = v[t]!;
      const out = new Float64Array(d.length);
      for (let i = 0; i < d.length; i++) {
        const di = d[i]!;
        mt[i] = Math.fround(beta1 * mt[i]! + (1 - beta1) * di);
        vt[i] = Math.fround(beta2 * vt[i]! + (1 - beta2) * di * di);
        out[i] = mt[i]! / (Math.sqrt(vt[i]!) + tau);
      }
      return out;
    });
    return {
      weights: applyStep(input.global, step, eta),
      state: slotsToState(input.global, PREFIXES, [m, v]),
    };
  }
}
