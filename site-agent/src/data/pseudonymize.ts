import { createHmac } from 'node:crypto';
import { FedsslError } from '@fedssl/shared/errors';

/**
 * Patient ids → pseudonyms → class indices, all on the site.
 *
 * A pseudonym is HMAC-SHA256(site secret, raw id): stable for one site (same patient, same
 * class every round), unlinkable across sites (each has its own secret), and not
 * reversible without the secret, which never leaves the agent home. Raw ids enter this
 * module and never leave it: callers get only class indices and counts.
 */

/** HMAC-SHA256 of the trimmed raw id under the site secret, lower-case hex. */
export function pseudonymize(secret: Uint8Array, rawId: string): string {
  if (secret.length < 16)
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `pseudonym secret too short: expected ≥ 16 bytes, got ${secret.length}`,
    );
  return createHmac('sha256', secret).update(rawId.trim(), 'utf8').digest('hex');
}

/** Class assignment for a list of images. */
export interface PatientClasses {
  /** Class of each image, in input order. */
  labels: Int32Array;
  /** Number of classes (patients + images without a patient id). */
  classes: number;
  /** Number of distinct identified patients. */
  patients: number;
  /** Images that had no patient id (each got a class of its own). */
  unidentified: number;
}

/**
 * Map each image's raw patient id (or null/empty when unknown) to a class index.
 * Identified patients get classes 0..P-1 in the sorted order of their pseudonyms (so the
 * numbering reveals nothing about the raw ids or the file order); each image without an
 * id gets its own class after those, in input order (it is its own "patient").
 * @example assignPatientClasses(secret, ['A', 'B', 'A', null]).labels // e.g. [1, 0, 1, 2]
 */
export function assignPatientClasses(
  secret: Uint8Array,
  rawIds: readonly (string | null | undefined)[],
): PatientClasses {
  return assignPseudonymClasses(
    rawIds.map((id) =>
      id === null || id === undefined || id.trim() === '' ? null : pseudonymize(secret, id),
    ),
  );
}

/**
 * The same as {@link assignPatientClasses} for ids already pseudonymized at read time (the
 * data sources do that): classes 0..P-1 in sorted pseudonym order, then one class per
 * image without a patient.
 */
export function assignPseudonymClasses(pseudonyms: readonly (string | null)[]): PatientClasses {
  const distinct = [...new Set(pseudonyms.filter((p): p is string => p !== null))].sort();
  const classOf = new Map(distinct.map((p, i) => [p, i]));
  const labels = new Int32Array(pseudonyms.length);
  let next = distinct.length;
  pseudonyms.forEach((p, i) => {
    labels[i] = p === null ? next++ : classOf.get(p)!;
  });
  return { labels, classes: next, patients: distinct.length, unidentified: next - distinct.length };
}

/**
 * Map a categorical (non-identifying) tag such as view or device to classes, sorted by
 * value; images without the tag share one extra "unknown" class.
 */
export function assignTagClasses(values: readonly (string | null | undefined)[]): {
  labels: Int32Array;
  classes: number;
} {
  const norm = values.map((v) => (v === null || v === undefined || v.trim() === '' ? null : v.trim()));
  const distinct = [...new Set(norm.filter((v): v is string => v !== null))].sort();
  const classOf = new Map(distinct.map((v, i) => [v, i]));
  const unknown = distinct.length;
  const labels = Int32Array.from(norm, (v) => (v === null ? unknown : classOf.get(v)!));
  return { labels, classes: distinct.length + (norm.includes(null) ? 1 : 0) };
}
