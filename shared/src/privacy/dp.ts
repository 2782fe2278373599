import type { NamedTensors } from '../codec/types';
import { GaussianSampler } from './random';
import type { DpConfig } from './config';

/** L2 norm of all tensors together, accumulated in float64. */
export function globalL2Norm(tensors: NamedTensors): number {
  let sum = 0;
  for (const t of tensors) for (let i = 0; i < t.data.length; i++) sum += t.data[i]! * t.data[i]!;
  return Math.sqrt(sum);
}

/** Number of scalars across tensors. */
export function scalarCount(tensors: NamedTensors): number {
  return tensors.reduce((n, t) => n + t.data.length, 0);
}

/** What {@link privatizeDelta} did, for the agent's ledger and logs (no tensor values). */
export interface DpApplied {
  clipNorm: number;
  noiseMultiplier: number;
  /** Standard deviation of the noise added to every coordinate: σ·C. */
  noiseStd: number;
  /** L2 norm of the delta before clipping, and the factor it was scaled by (≤ 1). */
  normBefore: number;
  clipFactor: number;
}

/**
 * The Gaussian mechanism on a whole update: scale the delta so its global L2 norm is at most
 * C (`clipNorm`), then add N(0, (σC)²) to every coordinate. Returns new tensors; the input is
 * not modified. The sensitivity of the result to a site's entire data is C (add/remove of the
 * site), which is what the accountant's σ refers to.
 */
export function privatizeDelta(
  delta: NamedTensors,
  dp: Pick<DpConfig, 'clipNorm' | 'noiseMultiplier'>,
  sampler: GaussianSampler = new GaussianSampler(),
): { delta: NamedTensors; applied: DpApplied } {
  const normBefore = globalL2Norm(delta);
  const clipFactor = normBefore > dp.clipNorm ? dp.clipNorm / normBefore : 1;
  const noiseStd = dp.noiseMultiplier * dp.clipNorm;
  const out = delta.map((t) => {
    const data = new Float32Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = t.data[i]! * clipFactor + noiseStd * sampler.next();
    return { name: t.name, shape: t.shape.slice(), data };
  });
  return {
    delta: out,
    applied: { clipNorm: dp.clipNorm, noiseMultiplier: dp.noiseMultiplier, noiseStd, normBefore, clipFactor },
  };
}

/**
 * A high-probability bound on the norm of the added noise: for z ~ N(0, s²·I_d),
 * P(‖z‖ ≥ s(√d + t)) ≤ exp(−t²/2) (Gaussian concentration of the Lipschitz map z ↦ ‖z‖), so with
 * t = √(2 ln(1/p)) the bound fails with probability at most p. A privatized delta's norm is at
 * most C plus this bound.
 */
export function noiseNormBound(dimension: number, noiseStd: number, failureProbability = 1e-9): number {
  return noiseStd * (Math.sqrt(dimension) + Math.sqrt(2 * Math.log(1 / failureProbability)));
}
