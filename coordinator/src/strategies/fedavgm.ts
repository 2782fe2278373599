import type { NamedTensors } from '@fedssl/shared/codec';
import { weightedMeanDelta } from './fedavg';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';
import { float32Slots, namedState, requireUpdates, stateViews } from './tensors';

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
 *
 * Δ is FedAvg's own fold ({@link weightedMeanDelta}: float64 sums borrowed from
 * `input.buffers`, four deltas per pass, each released once folded); the server step is one
 * more pass over the sums, after which they go back to the pool. The new state is borrowed
 * from `input.buffers` too (`aggregateRound` gives it back once saved).
 */
export class FedAvgMStrategy implements Strategy {
  readonly name = 'fedavgm';
  readonly stateful = true;

  constructor(private readonly options: FedAvgMOptions) {}

  aggregate(input: AggregationInput): AggregationOutput {
    requireUpdates(this.name, input.updates.length);
    const { serverLearningRate: eta, serverMomentum: beta } = this.options;
    const stored = stateViews(this.name, input.global, input.state, PREFIXES);
    const mean = weightedMeanDelta(input);
    const [momentum] = float32Slots(input.global, 1, input.buffers) as [Float32Array[]];
    const weights: NamedTensors = input.global.map((g, t) => {
      const w = new Float32Array(g.data.length);
      momentumStep(g.data, mean[t]!, stored?.[0]![t] ?? null, beta, eta, w, momentum[t]!);
      return { name: g.name, shape: g.shape.slice(), data: w };
    });
    input.buffers?.recycle(mean);
    return { weights, state: namedState(input.global, PREFIXES[0], momentum) };
  }
}

/**
 * `v = fround(β·v₀ + Δ)`, `w = g + η·v` (stored as float32). v is rounded to float32 before the
 * step: the persisted state is float32, and the weights must come from exactly what the next
 * round (or a restarted coordinator) reads back. Without a stored v₀ the product is β·0, so
 * the first round's bits are those of a zero-filled state.
 */
function momentumStep(
  g: Float32Array,
  delta: Float64Array,
  v0: Float32Array | null,
  beta: number,
  eta: number,
  w: Float32Array,
  v: Float32Array,
): void {
  const n = g.length;
  if (v0) {
    for (let i = 0; i < n; i++) {
      const vi = Math.fround(beta * v0[i]! + delta[i]!);
      v[i] = vi;
      w[i] = g[i]! + eta * vi;
    }
  } else {
    const zero = beta * 0;
    for (let i = 0; i < n; i++) {
      const vi = Math.fround(zero + delta[i]!);
      v[i] = vi;
      w[i] = g[i]! + eta * vi;
    }
  }
}
