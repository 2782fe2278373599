/**
 * Rényi-DP accountant for the (Poisson-subsampled) Gaussian mechanism, composed over rounds.
 *
 * RDP of one step at order α (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the
 * Sampled Gaussian Mechanism", §3.3, arXiv:1908.10530):
 *   q = 1:  ε_α = α / (2σ²)
 *   q < 1:  ε_α = log(A_α) / (α − 1), A_α as computed by TF-Privacy / Opacus / dp_accounting
 *           (binomial expansion for integer α; the two-sided erfc series for fractional α).
 * Composition over T steps adds RDP: ε_α(T) = T · ε_α.
 * Conversion to (ε, δ)-DP (Balle et al. 2020, "Hypothesis testing interpretations and Rényi
 * differential privacy", Thm 21; the form Opacus and dp_accounting use):
 *   ε = min_α [ ε_α(T) + log((α − 1)/α) − (log δ + log α)/(α − 1) ]
 * Pure functions of numbers; validated in tests against the published Opacus and dp_accounting
 * values.
 */

/** Opacus' default orders: 1.1 … 10.9 in steps of 0.1, then 12 … 63. */
export const DEFAULT_RDP_ORDERS: readonly number[] = Object.freeze([
  ...Array.from({ length: 99 }, (_, x) => 1 + (x + 1) / 10),
  ...Array.from({ length: 52 }, (_, x) => 12 + x),
]);

function logAdd(x: number, y: number): number {
  const a = Math.min(x, y);
  const b = Math.max(x, y);
  if (a === -Infinity) return b;
  return Math.log1p(Math.exp(a - b)) + b;
}

function logSub(x: number, y: number): number {
  if (x < y) throw new RangeError('log-space subtraction would be negative');
  if (y === -Infinity) return x;
  if (x === y) return -Infinity;
  const d = Math.expm1(x - y);
  return Number.isFinite(d) ? Math.log(d) + y : x;
}

/**
 * log(erfc(x)), accurate in the far tail. erfc from Numerical Recipes' Chebyshev fit
 * (fractional error < 1.2e-7 everywhere), kept in log form so large x does not underflow.
 */
export function logErfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const poly =
    -z * z -
    1.26551223 +
    t *
      (1.00002368 +
        t *
          (0.37409196 +
            t *
              (0.09678418 +
                t *
                  (-0.18628806 +
                    t *
                      (0.27886807 +
                        t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  const logTail = Math.log(t) + poly; // log erfc(|x|)
  return x >= 0 ? logTail : Math.log(2 - Math.exp(logTail));
}

function logAInt(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  let logBinom = 0; // log C(alpha, 0)
  for (let i = 0; i <= alpha; i++) {
    if (i > 0) logBinom += Math.log((alpha - i + 1) / i);
    const s = logBinom + i * Math.log(q) + (alpha - i) * Math.log1p(-q) + (i * i - i) / (2 * sigma * sigma);
    logA = logAdd(logA, s);
  }
  return logA;
}

function logAFrac(q: number, sigma: number, alpha: number): number {
  let logA0 = -Infinity;
  let logA1 = -Infinity;
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  let coef = 1; // C(alpha, i), built as a running product (alpha is not an integer)
  for (let i = 0; ; i++) {
    if (i > 0) coef *= (alpha - i + 1) / i;
    const logCoef = Math.log(Math.abs(coef));
    const j = alpha - i;
    const logT0 = logCoef + i * Math.log(q) + j * Math.log1p(-q);
    const logT1 = logCoef + j * Math.log(q) + i * Math.log1p(-q);
    const logE0 = Math.log(0.5) + logErfc((i - z0) / (Math.SQRT2 * sigma));
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
    if (coef > 0) {
      logA0 = logAdd(logA0, logS0);
      logA1 = logAdd(logA1, logS1);
    } else {
      logA0 = logSub(logA0, logS0);
      logA1 = logSub(logA1, logS1);
    }
    if (Math.max(logS0, logS1) < -30) break;
  }
  return logAdd(logA0, logA1);
}

/** RDP of one step of the sampled Gaussian mechanism at order `alpha` (may be Infinity). */
export function rdpSampledGaussian(q: number, sigma: number, alpha: number): number {
  if (q === 0) return 0;
  if (sigma === 0) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  if (!Number.isFinite(alpha)) return Infinity;
  const logA = Number.isInteger(alpha) ? logAInt(q, sigma, alpha) : logAFrac(q, sigma, alpha);
  return logA / (alpha - 1);
}

/** RDP of `steps` compositions at each order. */
export function computeRdp(
  q: number,
  sigma: number,
  steps: number,
  orders: readonly number[] = DEFAULT_RDP_ORDERS,
): number[] {
  return orders.map((a) => steps * rdpSampledGaussian(q, sigma, a));
}

/**
 * The smallest ε over `orders` for which the RDP curve gives (ε, δ)-DP (Balle et al. 2020,
 * Thm 21, as in dp_accounting's `compute_epsilon`). Orders ≤ 1.01 are skipped (unstable).
 */
export function epsilonFromRdp(
  orders: readonly number[],
  rdp: readonly number[],
  delta: number,
): { epsilon: number; order: number } {
  if (orders.length !== rdp.length) throw new RangeError('orders and rdp differ in length');
  if (!(delta > 0 && delta < 1)) throw new RangeError(`delta must be in (0, 1), got ${delta}`);
  let best = { epsilon: Infinity, order: NaN };
  for (let k = 0; k < orders.length; k++) {
    const a = orders[k]!;
    const r = rdp[k]!;
    let eps: number;
    if (delta * delta + Math.expm1(-r) > 0) eps = 0;
    else if (a > 1.01) eps = r + Math.log1p(-1 / a) - Math.log(delta * a) / (a - 1);
    else eps = Infinity;
    if (eps < best.epsilon) best = { epsilon: eps, order: a };
  }
  return best;
}

/** What is composed: `steps` releases of the Gaussian mechanism with noise multiplier σ. */
export interface GaussianAccounting {
  noiseMultiplier: number;
  /** Probability that a unit (site) takes part in a step; 1 when every step includes it. */
  sampleRate: number;
  steps: number;
  delta: number;
  orders?: readonly number[];
}

/**
 * (ε, δ) after composing the (subsampled) Gaussian mechanism `steps` times.
 * @example dpEpsilon({ noiseMultiplier: 1.5, sampleRate: 0.04, steps: 2250, delta: 1e-5 }).epsilon // 7.329
 */
export function dpEpsilon(a: GaussianAccounting): { epsilon: number; order: number } {
  const orders = a.orders ?? DEFAULT_RDP_ORDERS;
  if (a.steps === 0) return { epsilon: 0, order: NaN };
  return epsilonFromRdp(orders, computeRdp(a.sampleRate, a.noiseMultiplier, a.steps, orders), a.delta);
}
