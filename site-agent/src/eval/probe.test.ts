import { describe, expect, it } from 'vitest';
import { isFedsslError } from '@fedssl/shared/errors';
import { mulberry32, gaussian } from '@fedssl/shared/model';
import { checkPatientWise, patientFolds } from './folds';
import { fitLogistic, predictLogistic } from './logistic';
import { accuracy, aucMannWhitney, meanStd } from './metrics';
import { crossValidateProbe } from './probe';

describe('aucMannWhitney', () => {
  it('matches a hand count of positive–negative pairs, ties counting one half', () => {
    // Pairs (pos, neg): 0.35>0.1 ✓, 0.35<0.4 ✗, 0.8>0.1 ✓, 0.8>0.4 ✓ → 3/4.
    expect(aucMannWhitney([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])).toBeCloseTo(0.75, 12);
    // Ties: pos {0.5, 0.9}, neg {0.5, 0.2}: 0.5=0.5 ½, 0.5>0.2 1, 0.9>0.5 1, 0.9>0.2 1 → 3.5/4.
    expect(aucMannWhitney([0.5, 0.9, 0.5, 0.2], [1, 1, 0, 0])).toBeCloseTo(0.875, 12);
    expect(aucMannWhitney([3, 2, 1], [1, 1, 0])).toBe(1);
    expect(aucMannWhitney([1, 2, 3], [1, 1, 0])).toBe(0);
    expect(aucMannWhitney([1, 2], [1, 1])).toBeNaN();
  });

  it('agrees with the O(n²) pair count on random data', () => {
    const rand = mulberry32(7);
    const scores = Array.from({ length: 200 }, () => Math.round(rand() * 20) / 20);
    const labels = scores.map(() => (rand() < 0.4 ? 1 : 0));
    let wins = 0;
    let pairs = 0;
    for (let i = 0; i < 200; i++)
      for (let j = 0; j < 200; j++)
        if (labels[i] === 1 && labels[j] === 0) {
          pairs++;
          wins += scores[i]! > scores[j]! ? 1 : scores[i] === scores[j] ? 0.5 : 0;
        }
    expect(aucMannWhitney(scores, labels)).toBeCloseTo(wins / pairs, 12);
  });

  it('accuracy and mean ± sample std', () => {
    expect(accuracy([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 0])).toBe(0.75);
    const s = meanStd([1, 2, 3, 4]);
    expect(s.mean).toBe(2.5);
    expect(s.std).toBeCloseTo(Math.sqrt(5 / 3), 12);
  });
});

describe('fitLogistic', () => {
  it('reaches the optimum: the gradient of the regularised loss vanishes', () => {
    const rand = gaussian(mulberry32(3));
    const n = 300;
    const d = 4;
    const x = Float64Array.from({ length: n * d }, () => rand());
    const y = Array.from({ length: n }, (_, i) =>
      x[i * d]! - 0.5 * x[i * d + 1]! + 0.3 * rand() > 0 ? 1 : 0,
    );
    const l2 = 0.01;
    const m = fitLogistic(x, y, d, { l2, tolerance: 1e-9 });
    expect(m.converged).toBe(true);
    const p = predictLogistic(m, x, d);
    const g = new Float64Array(d + 1);
    for (let i = 0; i < n; i++) {
      const r = p[i]! - y[i]!;
      for (let j = 0; j < d; j++) g[j]! += (r * x[i * d + j]!) / n;
      g[d]! += r / n;
    }
    for (let j = 0; j < d; j++) g[j]! += l2 * m.w[j]!;
    for (const v of g) expect(Math.abs(v)).toBeLessThan(1e-6);
    expect(m.w[0]!).toBeGreaterThan(0);
    expect(m.w[1]!).toBeLessThan(0);
  });
});

describe('patient-wise folds', () => {
  it('never splits a patient and uses every fold', () => {
    const groups = Int32Array.from({ length: 100 }, (_, i) => Math.floor(i / 2));
    const folds = patientFolds(groups, 5, 1);
    for (let i = 0; i < 100; i += 2) expect(folds[i]).toBe(folds[i + 1]);
    expect(new Set(folds).size).toBe(5);
    expect(() => checkPatientWise(groups, folds)).not.toThrow();
  });

  it('refuses given folds that split a patient, and too few patients', () => {
    let err: unknown;
    try {
      checkPatientWise([0, 0, 1], [0, 1, 1]);
    } catch (e) {
      err = e;
    }
    expect(isFedsslError(err, 'PROBE_INVALID')).toBe(true);
    expect((err as Error).message).toBe(
      'the fold column puts 1 patient(s) in more than one fold; folds must be patient-wise',
    );
    expect(() => patientFolds([0, 0, 1], 5, 1)).toThrow('2 patients cannot fill 5 folds');
  });
});

/** Features where dimension 0 carries the label (learnable), plus noise dimensions. */
function synthetic(n: number, d: number, seed: number, learnable: boolean) {
  const rand = mulberry32(seed);
  const g = gaussian(rand);
  const labels = new Int32Array(n);
  const features = new Float32Array(n * d);
  const groups = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    groups[i] = Math.floor(i / 2); // two images per patient
    labels[i] = i % 4 < 2 ? 1 : 0; // both images of a patient share the label
    for (let j = 0; j < d; j++) features[i * d + j] = 3 * g();
    if (learnable) features[i * d] = (labels[i] ? 1.5 : -1.5) + g();
  }
  if (!learnable)
    for (let i = n - 1; i > 0; i--) {
      // Random labels: shuffle by patient pairs so labels are independent of the features.
      const j = Math.floor(rand() * (i + 1));
      [labels[i], labels[j]] = [labels[j]!, labels[i]!];
    }
  return { features, labels, groups, dim: d };
}

describe('crossValidateProbe', () => {
  it('finds a learnable label (AUC well above 0.5)', () => {
    const r = crossValidateProbe({ ...synthetic(400, 16, 1, true), k: 5, seed: 2 });
    expect(r.folds).toHaveLength(5);
    expect(r.auc.mean).toBeGreaterThan(0.9);
    expect(r.accuracy.mean).toBeGreaterThan(0.8);
    expect(r.folds.reduce((s, f) => s + f.testImages, 0)).toBe(400);
  });

  it('reports chance on random labels (AUC near 0.5)', () => {
    const r = crossValidateProbe({ ...synthetic(400, 16, 5, false), k: 5, seed: 2 });
    expect(Math.abs(r.auc.mean - 0.5)).toBeLessThan(0.08);
  });

  it('uses given folds as they are', () => {
    const s = synthetic(40, 4, 1, true);
    const folds = Int32Array.from(s.groups, (g) => g % 2);
    const r = crossValidateProbe({ ...s, folds });
    expect(r.folds.map((f) => f.fold)).toEqual([0, 1]);
    expect(r.folds.map((f) => f.testImages)).toEqual([20, 20]);
  });

  it('rejects non-binary labels', () => {
    expect(() =>
      crossValidateProbe({ ...synthetic(40, 4, 1, true), labels: new Int32Array(40).fill(2) }),
    ).toThrow('labels must be 0 or 1, got 2 at 0');
  });
});
