import type { NamedTensors } from '@fedssl/shared/codec';
import { weightedMeanDelta } from './fedavg';
import type { AggregationInput, AggregationOutput, Strategy } from './strategy';
import { float32Slots, namedState, requireUpdates, stateViews } from './tensors';

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
 *
 * Δ is FedAvg's own fold ({@link weightedMeanDelta}: float64 sums borrowed from
 * `input.buffers`, four deltas per pass, each released once folded); the server step is one
 * more pass over the sums, after which they go back to the pool. The new state is borrowed
 * from `input.buffers` too (`aggregateRound` gives it back once saved).
 */
export class FedAdamStrategy implements Strategy {
  readonly name = 'fedadam';
  readonly stateful = true;

  constructor(private readonly options: FedAdamOptions) {}

  aggregate(input: AggregationInput): AggregationOutput {
    requireUpdates(this.name, input.updates.length);
    const stored = stateViews(this.name, input.global, input.state, PREFIXES);
    const delta = weightedMeanDelta(input);
    const [ms, vs] = float32Slots(input.global, 2, input.buffers) as [Float32Array[], Float32Array[]];
    const weights: NamedTensors = input.global.map((g, t) => {
      const w = new Float32Array(g.data.length);
      adamStep(
        g.data,
        delta[t]!,
        stored?.[0]![t] ?? null,
        stored?.[1]![t] ?? null,
        this.options,
        w,
        ms[t]!,
        vs[t]!,
      );
      return { name: g.name, shape: g.shape.slice(), data: w };
    });
    input.buffers?.recycle(delta);
    return {
      weights,
      state: [...namedState(input.global, PREFIXES[0], ms), ...namedState(input.global, PREFIXES[1], vs)],
    };
  }
}

/**
 * `m = fround(β₁·m₀ + (1 − β₁)·Δ)`, `v = fround(β₂·v₀ + (1 − β₂)·Δ·Δ)`,
 * `w = g + η·(m / (√v + τ))` (stored as float32), each evaluated in that order so that the
 * bits are those of the float64-slot form this replaced. Without stored moments the products
 * are β·0, so the first round's bits are those of zero-filled state.
 */
function adamStep(
  g: Float32Array,
  delta: Float64Array,
  m0: Float32Array | null,
  v0: Float32Array | null,
  { serverLearningRate: eta, beta1, beta2, tau }: FedAdamOptions,
  w: Float32Array,
  m: Float32Array,
  v: Float32Array,
): void {
  const n = g.length;
  const c1 = 1 - beta1;
  const c2 = 1 - beta2;
  if (m0 && v0) {
    for (let i = 0; i < n; i++) {
      const d = delta[i]!;
      const mi = Math.fround(beta1 * m0[i]! + c1 * d);
      const vi = Math.fround(beta2 * v0[i]! + c2 * d * d);
      m[i] = mi;
      v[i] = vi;
      w[i] = g[i]! + eta * (mi / (Math.sqrt(vi) + tau));
    }
  } else {
    const zero1 = beta1 * 0;
    const zero2 = beta2 * 0;
    for (let i = 0; i < n; i++) {
      const d = delta[i]!;
      const mi = Math.fround(zero1 + c1 * d);
      const vi = Math.fround(zero2 + c2 * d * d);
      m[i] = mi;
      v[i] = vi;
      w[i] = g[i]! + eta * (mi / (Math.sqrt(vi) + tau));
    }
  }
}
