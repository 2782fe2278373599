import { FedsslError } from '@fedssl/shared/errors';
import { checkPatientWise, patientFolds } from './folds';
import { applyStandardizer, fitLogistic, fitStandardizer, predictLogistic } from './logistic';
import { accuracy, aucMannWhitney, meanStd } from './metrics';

/** Inputs of {@link crossValidateProbe}. */
export interface ProbeInputs {
  /** `count × dim` frozen features, row-major. */
  features: Float32Array;
  dim: number;
  /** Binary label of every image (0/1). */
  labels: ArrayLike<number>;
  /** Patient class of every image: images of one patient never straddle folds. */
  groups: ArrayLike<number>;
  /** Given (official) fold of every image; otherwise `k` seeded patient-wise folds. */
  folds?: ArrayLike<number>;
  k?: number;
  seed?: number;
  /** L2 weight λ of the logistic regression (on the mean log-loss; default 0.01). */
  l2?: number;
}

/** One fold's test figures. */
export interface FoldResult {
  fold: number;
  trainImages: number;
  testImages: number;
  testPositives: number;
  auc: number;
  accuracy: number;
  iterations: number;
}

/** The probe's report. */
export interface ProbeResult {
  folds: FoldResult[];
  auc: { mean: number; std: number };
  accuracy: { mean: number; std: number };
  images: number;
  positives: number;
  dim: number;
  l2: number;
}

/**
 * Linear probe with patient-wise cross-validation: for each fold, standardise the features
 * with the training folds' mean and deviation, fit L2 logistic regression on the training
 * folds, and report AUC (Mann–Whitney) and accuracy (threshold 0.5) on the held-out fold;
 * then mean ± sample standard deviation over folds.
 * @throws FedsslError PROBE_INVALID for non-binary labels, split patients in given folds,
 *   or too few patients for `k` folds.
 */
export function crossValidateProbe(inp: ProbeInputs): ProbeResult {
  const n = inp.labels.length;
  if (inp.features.length !== n * inp.dim || inp.groups.length !== n) {
    throw new FedsslError(
      'PROBE_INVALID',
      `probe inputs disagree: ${n} labels, ${inp.groups.length} groups, ${inp.features.length / inp.dim} feature rows`,
    );
  }
  for (let i = 0; i < n; i++) {
    if (inp.labels[i] !== 0 && inp.labels[i] !== 1)
      throw new FedsslError('PROBE_INVALID', `labels must be 0 or 1, got ${inp.labels[i]} at ${i}`);
  }
  const l2 = inp.l2 ?? 0.01;
  let folds: ArrayLike<number>;
  if (inp.folds) {
    checkPatientWise(inp.groups, inp.folds);
    folds = inp.folds;
  } else {
    folds = patientFolds(inp.groups, inp.k ?? 5, inp.seed ?? 0);
  }
  const foldIds = [...new Set(Array.from(folds))].sort((a, b) => a - b);
  if (foldIds.length < 2) throw new FedsslError('PROBE_INVALID', 'cross-validation needs at least 2 folds');
  const results: FoldResult[] = [];
  for (const f of foldIds) {
    const train: number[] = [];
    const test: number[] = [];
    for (let i = 0; i < n; i++) (folds[i] === f ? test : train).push(i);
    const s = fitStandardizer(inp.features, inp.dim, train);
    const xTrain = applyStandardizer(inp.features, inp.dim, train, s);
    const xTest = applyStandardizer(inp.features, inp.dim, test, s);
    const yTrain = train.map((i) => inp.labels[i]!);
    const yTest = test.map((i) => inp.labels[i]!);
    const model = fitLogistic(xTrain, yTrain, inp.dim, { l2 });
    const p = predictLogistic(model, xTest, inp.dim);
    results.push({
      fold: f,
      trainImages: train.length,
      testImages: test.length,
      testPositives: yTest.reduce((a, b) => a + b, 0),
      auc: aucMannWhitney(p, yTest),
      accuracy: accuracy(p, yTest),
      iterations: model.iterations,
    });
  }
  let positives = 0;
  for (let i = 0; i < n; i++) positives += inp.labels[i]!;
  return {
    folds: results,
    auc: meanStd(results.map((r) => r.auc).filter((a) => Number.isFinite(a))),
    accuracy: meanStd(results.map((r) => r.accuracy)),
    images: n,
    positives,
    dim: inp.dim,
    l2,
  };
}
