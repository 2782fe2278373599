import { FedsslError } from '@fedssl/shared/errors';
import { mulberry32 } from '@fedssl/shared/model';

/**
 * Patient-wise K-fold assignment: whole patients are dealt to folds in a seeded random
 * order, so no patient has images in two folds. Returns the fold (0..k−1) of every image.
 * @param groups patient class of each image (pseudonymous class indices)
 * @throws FedsslError PROBE_INVALID when there are fewer patients than folds.
 */
export function patientFolds(groups: ArrayLike<number>, k: number, seed: number): Int32Array {
  const patients = [...new Set(Array.from(groups))].sort((a, b) => a - b);
  if (patients.length < k) {
    throw new FedsslError('PROBE_INVALID', `${patients.length} patients cannot fill ${k} folds`);
  }
  const rand = mulberry32(seed);
  for (let i = patients.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [patients[i], patients[j]] = [patients[j]!, patients[i]!];
  }
  const foldOf = new Map(patients.map((p, i) => [p, i % k]));
  return Int32Array.from(Array.from(groups), (g) => foldOf.get(g)!);
}

/**
 * Check given (official) folds: no patient may appear in two folds.
 * @throws FedsslError PROBE_INVALID naming how many patients are split.
 */
export function checkPatientWise(groups: ArrayLike<number>, folds: ArrayLike<number>): void {
  const seen = new Map<number, number>();
  let split = 0;
  const counted = new Set<number>();
  for (let i = 0; i < groups.length; i++) {
    const f = seen.get(groups[i]!);
    if (f === undefined) seen.set(groups[i]!, folds[i]!);
    else if (f !== folds[i] && !counted.has(groups[i]!)) {
      split++;
      counted.add(groups[i]!);
    }
  }
  if (split > 0) {
    throw new FedsslError(
      'PROBE_INVALID',
      `the fold column puts ${split} patient(s) in more than one fold; folds must be patient-wise`,
    );
  }
}
