import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import type { Strategy, StrategyUpdate } from './strategy';

/**
 * FedAvg (McMahan et al. 2017) over deltas: new global = global + Σ wᵢ·Δᵢ / Σ wᵢ with
 * wᵢ = exampleCount. Running sums are Float64Array so the result does not depend on
 * float32 rounding of partial sums; memory is O(model) however many sites contribute.
 * The sum is still order-dependent in the last float64 bit, which is why the engine
 * always folds updates in siteId order.
 */
export class FedAvgStrategy implements Strategy {
  readonly name = 'fedavg';
  private global: NamedTensors | null = null;
  private sums: Float64Array[] = [];
  private totalWeight = 0;
  private count = 0;

  begin(global: NamedTensors): void {
    this.global = global;
    this.sums = global.map((t) => new Float64Array(t.data.length));
    this.totalWeight = 0;
    this.count = 0;
  }

  accumulate(update: StrategyUpdate): void {
    const global = this.requireBegun();
    const { delta, exampleCount } = update;
    if (!Number.isFinite(exampleCount) || exampleCount <= 0) {
      throw new FedsslError(
        'UPDATE_EXAMPLE_COUNT_INVALID',
        `exampleCount must be a positive number, got ${exampleCount}`,
      );
    }
    if (delta.length !== global.length) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `delta has ${delta.length} tensors, global has ${global.length}`,
      );
    }
    for (let t = 0; t < global.length; t++) {
      const g = global[t]!;
      const d = delta[t]!;
      if (d.name !== g.name || d.data.length !== g.data.length) {
        throw new FedsslError(
          'MODEL_WEIGHTS_MISMATCH',
          `delta tensor ${t} is ${d.name}[${d.data.length}], expected ${g.name}[${g.data.length}]`,
        );
      }
      const sum = this.sums[t]!;
      const data = d.data;
      for (let i = 0; i < data.length; i++) sum[i]! += exampleCount * data[i]!;
    }
    this.totalWeight += exampleCount;
    this.count++;
  }

  finish(): NamedTensors {
    const global = this.requireBegun();
    if (this.count === 0) {
      throw new FedsslError('RUN_INVALID_STATE', 'fedavg: finish() called without any accumulated update');
    }
    const out = global.map((g, t) => {
      const sum = this.sums[t]!;
      const data = new Float32Array(g.data.length);
      for (let i = 0; i < data.length; i++) data[i] = g.data[i]! + sum[i]! / this.totalWeight;
      return { name: g.name, shape: g.shape.slice(), data };
    });
    this.global = null;
    this.sums = [];
    return out;
  }

  private requireBegun(): NamedTensors {
    if (!this.global) throw new FedsslError('RUN_INVALID_STATE', 'fedavg: begin() must be called first');
    return this.global;
  }
}
