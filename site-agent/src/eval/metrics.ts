/**
 * Evaluation metrics of the linear probe, in plain JavaScript (float64).
 */

/**
 * Area under the ROC curve by the Mann–Whitney U statistic: the probability that a random
 * positive scores above a random negative, ties counting one half. Ranks are averaged over
 * ties, so AUC = (R₊ − n₊(n₊+1)/2) / (n₊·n₋) with R₊ the rank sum of the positives.
 * @returns NaN when either class is absent.
 * @example aucMannWhitney([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) // 0.75
 */
export function aucMannWhitney(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let rankSumPos = 0;
  let pos = 0;
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]!] === scores[order[i]!]) j++;
    const rank = (i + j) / 2 + 1; // average 1-based rank of the tie block
    for (let k = i; k <= j; k++) {
      if (labels[order[k]!] === 1) {
        rankSumPos += rank;
        pos++;
      }
    }
    i = j + 1;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) return NaN;
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

/** Share of `probabilities` on the right side of `threshold` (default 0.5). */
export function accuracy(
  probabilities: ArrayLike<number>,
  labels: ArrayLike<number>,
  threshold = 0.5,
): number {
  let right = 0;
  for (let i = 0; i < probabilities.length; i++) {
    if ((probabilities[i]! >= threshold ? 1 : 0) === labels[i]) right++;
  }
  return probabilities.length ? right / probabilities.length : NaN;
}

/** Mean and sample standard deviation (n − 1; 0 for a single value). */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const n = xs.length;
  if (n === 0) return { mean: NaN, std: NaN };
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  const v = n > 1 ? xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1) : 0;
  return { mean, std: Math.sqrt(v) };
}
