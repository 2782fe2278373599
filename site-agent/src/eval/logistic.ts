/**
 * L2-regularised logistic regression on dense features, fitted by L-BFGS, plus the
 * feature standardisation of the probe. Plain float64 JavaScript: the probe's problems
 * are small (thousands of rows, at most a few thousand features).
 */

/** Per-column mean and standard deviation, fitted on training rows only. */
export interface Standardizer {
  mean: Float64Array;
  std: Float64Array;
}

/** Fit a standardizer on the rows `rows` of `x` (`n × d`, row-major). */
export function fitStandardizer(x: Float32Array, d: number, rows: readonly number[]): Standardizer {
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) mean[j]! += x[r * d + j]!;
  for (let j = 0; j < d; j++) mean[j]! /= Math.max(rows.length, 1);
  for (const r of rows) for (let j = 0; j < d; j++) sq[j]! += (x[r * d + j]! - mean[j]!) ** 2;
  // A constant column gets std 1 (it becomes all zeros and carries no weight).
  const std = sq.map((s) => {
    const v = Math.sqrt(s / Math.max(rows.length, 1));
    return v > 1e-12 ? v : 1;
  });
  return { mean, std };
}

/** Standardized copy of rows `rows` of `x`, as a `rows.length × d` row-major matrix. */
export function applyStandardizer(
  x: Float32Array,
  d: number,
  rows: readonly number[],
  s: Standardizer,
): Float64Array {
  const out = new Float64Array(rows.length * d);
  rows.forEach((r, i) => {
    for (let j = 0; j < d; j++) out[i * d + j] = (x[r * d + j]! - s.mean[j]!) / s.std[j]!;
  });
  return out;
}

/** A fitted model: `p = σ(x·w + b)`. */
export interface LogisticModel {
  w: Float64Array;
  b: number;
  iterations: number;
  converged: boolean;
}

function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** log(1 + e^z) without overflow. */
function softplus(z: number): number {
  return z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
}

/**
 * Mean log-loss + (λ/2)‖w‖² (bias not penalised) and its gradient at θ = [w, b].
 */
function lossAndGrad(
  x: Float64Array,
  y: ArrayLike<number>,
  n: number,
  d: number,
  l2: number,
  theta: Float64Array,
  grad: Float64Array,
): number {
  grad.fill(0);
  let loss = 0;
  const b = theta[d]!;
  for (let i = 0; i < n; i++) {
    let z = b;
    const row = i * d;
    for (let j = 0; j < d; j++) z += x[row + j]! * theta[j]!;
    // −log p(y|x) = softplus(z) − y·z
    loss += softplus(z) - y[i]! * z;
    const r = sigmoid(z) - y[i]!;
    for (let j = 0; j < d; j++) grad[j]! += r * x[row + j]!;
    grad[d]! += r;
  }
  let reg = 0;
  for (let j = 0; j <= d; j++) grad[j]! /= n;
  for (let j = 0; j < d; j++) {
    reg += theta[j]! * theta[j]!;
    grad[j]! += l2 * theta[j]!;
  }
  return loss / n + 0.5 * l2 * reg;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/**
 * Fit logistic regression with labels in {0, 1} by L-BFGS (memory 10, backtracking
 * Armijo line search) on mean log-loss + (l2/2)‖w‖². The objective is strictly convex for
 * l2 > 0, so the optimum is unique and the result does not depend on a seed.
 */
export function fitLogistic(
  x: Float64Array,
  y: ArrayLike<number>,
  d: number,
  opts: { l2: number; maxIterations?: number; tolerance?: number },
): LogisticModel {
  const n = y.length;
  const m = 10;
  const maxIt = opts.maxIterations ?? 500;
  const tol = opts.tolerance ?? 1e-6;
  const theta = new Float64Array(d + 1);
  const g = new Float64Array(d + 1);
  let f = lossAndGrad(x, y, n, d, opts.l2, theta, g);
  const sHist: Float64Array[] = [];
  const yHist: Float64Array[] = [];
  const rho: number[] = [];
  const alpha = new Float64Array(m);
  const next = new Float64Array(d + 1);
  const gNext = new Float64Array(d + 1);
  let it = 0;
  let converged = false;
  for (; it < maxIt; it++) {
    if (Math.sqrt(dot(g, g)) < tol) {
      converged = true;
      break;
    }
    // Two-loop recursion: direction = −H·g.
    const q = Float64Array.from(g);
    for (let k = sHist.length - 1; k >= 0; k--) {
      alpha[k] = rho[k]! * dot(sHist[k]!, q);
      for (let j = 0; j <= d; j++) q[j]! -= alpha[k]! * yHist[k]![j]!;
    }
    const last = sHist.length - 1;
    const gamma = last >= 0 ? dot(sHist[last]!, yHist[last]!) / dot(yHist[last]!, yHist[last]!) : 1;
    for (let j = 0; j <= d; j++) q[j]! *= gamma;
    for (let k = 0; k < sHist.length; k++) {
      const beta = rho[k]! * dot(yHist[k]!, q);
      for (let j = 0; j <= d; j++) q[j]! += sHist[k]![j]! * (alpha[k]! - beta);
    }
    for (let j = 0; j <= d; j++) q[j] = -q[j]!;
    let slope = dot(g, q);
    if (slope >= 0) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      sHist.length = yHist.length = rho.length = 0;
      for (let j = 0; j <= d; j++) q[j] = -g[j]!;
      slope = -dot(g, g);
    }
    let step = 1;
    let fNext = Infinity;
    for (let ls = 0; ls < 40; ls++) {
      for (let j = 0; j <= d; j++) next[j] = theta[j]! + step * q[j]!;
      fNext = lossAndGrad(x, y, n, d, opts.l2, next, gNext);
      if (fNext <= f + 1e-4 * step * slope) break;
      step *= 0.5;
    }
    if (!(fNext < f) && Math.abs(fNext - f) < 1e-15) {
      converged = true;
      break;
    }
    const s = new Float64Array(d + 1);
    const yk = new Float64Array(d + 1);
    for (let j = 0; j <= d; j++) {
      s[j] = next[j]! - theta[j]!;
      yk[j] = gNext[j]! - g[j]!;
    }
    const sy = dot(s, yk);
    if (sy > 1e-12) {
      sHist.push(s);
      yHist.push(yk);
      rho.push(1 / sy);
      if (sHist.length > m) {
        sHist.shift();
        yHist.shift();
        rho.shift();
      }
    }
    const rel = Math.abs(f - fNext) / Math.max(1, Math.abs(f));
    theta.set(next);
    g.set(gNext);
    f = fNext;
    if (rel < 1e-10) {
      converged = true;
      it++;
      break;
    }
  }
  return { w: theta.slice(0, d), b: theta[d]!, iterations: it, converged };
}

/** Probabilities σ(x·w + b) for the `n × d` rows of `x`. */
export function predictLogistic(model: LogisticModel, x: Float64Array, d: number): Float64Array {
  const n = x.length / d;
  const p = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let z = model.b;
    for (let j = 0; j < d; j++) z += x[i * d + j]! * model.w[j]!;
    p[i] = sigmoid(z);
  }
  return p;
}
