import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';

/** What {@link fedemaInit} decided for a round. */
export interface FedEmaInit {
  /** Initial shared weights of the local online network, in the global model's order. */
  weights: NamedTensors;
  /** μ, the weight of the previous local model (0 = plain replacement by the global one). */
  mu: number;
  /** ‖w_global − w_local‖₂ over all shared tensors (float64); 0 without a previous model. */
  divergence: number;
}

/**
 * FedEMA's divergence-aware local update (Zhuang et al., "Divergence-aware Federated
 * Self-Supervised Learning", ICLR 2022): instead of replacing its online network by the new
 * global one, a site starts the round from
 *
 *   w = μ·w_local + (1 − μ)·w_global,   μ = min(λ·‖w_global − w_local‖₂, 1)
 *
 * where w_local is its own online network at the end of its previous round. The more the
 * site diverged from the consensus, the more of its own model it keeps. The norm runs over
 * every shared tensor (encoder, projector and predictor, batch-norm statistics included),
 * and the same μ is applied to all of them.
 *
 * Pure: no TensorFlow. Without a previous local model (first round of the run for this
 * site) the global weights are returned unchanged (μ = 0).
 * @throws FedsslError MODEL_WEIGHTS_MISMATCH when the previous local model lacks a tensor of
 *   the global model or has another shape; AGENT_CONFIG_INVALID for a negative or non-finite λ.
 * @example const { weights, mu } = fedemaInit(global, state.online, task.training.fedemaScaler);
 */
export function fedemaInit(
  global: NamedTensors,
  previousLocal: NamedTensors | undefined,
  lambda: number,
): FedEmaInit {
  if (!(lambda >= 0 && Number.isFinite(lambda))) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `fedema scaler λ must be a finite number ≥ 0, got ${lambda}`,
    );
  }
  if (!previousLocal) return { weights: global, mu: 0, divergence: 0 };
  const local = byName(previousLocal);
  const pairs = global.map((g) => {
    const l = local.get(g.name);
    if (!l || l.data.length !== g.data.length || l.shape.join(',') !== g.shape.join(',')) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `previous local model has no tensor ${g.name} [${g.shape.join(',')}]`,
      );
    }
    return [g, l.data] as const;
  });
  let sq = 0;
  for (const [g, l] of pairs) {
    for (let i = 0; i < g.data.length; i++) {
      const d = g.data[i]! - l[i]!;
      sq += d * d;
    }
  }
  const divergence = Math.sqrt(sq);
  const mu = Math.min(lambda * divergence, 1);
  const weights = pairs.map(([g, l]) => {
    const data = new Float32Array(g.data.length);
    for (let i = 0; i < data.length; i++) data[i] = mu * l[i]! + (1 - mu) * g.data[i]!;
    return { name: g.name, shape: g.shape.slice(), data };
  });
  return { weights, mu, divergence };
}

/**
 * `local − global`, matched by name, in `local`'s order: the update a site uploads when it
 * trained from a FedEMA initialisation (the delta must stay relative to the global model
 * the coordinator folds it into, not to the mixed starting point).
 * @throws FedsslError MODEL_WEIGHTS_MISMATCH when a tensor is missing or differs in size.
 */
export function deltaFromGlobal(local: NamedTensors, global: NamedTensors): NamedTensors {
  const g = byName(global);
  return local.map((t) => {
    const base = g.get(t.name);
    if (!base || base.data.length !== t.data.length) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `global model has no tensor ${t.name} of ${t.data.length} values`,
      );
    }
    const data = new Float32Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = t.data[i]! - base.data[i]!;
    return { name: t.name, shape: t.shape.slice(), data };
  });
}

function byName(tensors: NamedTensors): Map<string, NamedTensors[number]> {
  return new Map(tensors.map((t) => [t.name, t]));
}
