import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { assignPatientClasses, assignTagClasses, pseudonymize } from './pseudonymize';

const secret = new Uint8Array(32).fill(7);
const otherSecret = new Uint8Array(32).fill(8);

describe('pseudonymize', () => {
  it('is HMAC-SHA256 of the trimmed id under the site secret, not the id itself', () => {
    const p = pseudonymize(secret, ' PAT-0007 ');
    expect(p).toBe(createHmac('sha256', Buffer.from(secret)).update('PAT-0007').digest('hex'));
    expect(p).toMatch(/^[0-9a-f]{64}$/);
    expect(p).not.toContain('PAT');
    expect(pseudonymize(otherSecret, 'PAT-0007')).not.toBe(p);
  });

  it('refuses a short secret', () => {
    expect(() => pseudonymize(new Uint8Array(8), 'x')).toThrow('pseudonym secret too short');
  });
});

describe('assignPatientClasses', () => {
  it('gives one class per patient, same id same class, unidentified images a class each', () => {
    const ids = ['PAT-B', 'PAT-A', 'PAT-B', null, '', 'PAT-C', undefined, ' PAT-A'];
    const r = assignPatientClasses(secret, ids);
    expect(r.patients).toBe(3);
    expect(r.unidentified).toBe(3);
    expect(r.classes).toBe(6);
    const l = Array.from(r.labels);
    expect(l[0]).toBe(l[2]);
    expect(l[1]).toBe(l[7]);
    expect(new Set([l[0], l[1], l[5]]).size).toBe(3);
    expect([l[0], l[1], l[5]].every((c) => c! >= 0 && c! < 3)).toBe(true);
    expect([l[3], l[4], l[6]]).toEqual([3, 4, 5]);
  });

  it('numbers patients by sorted pseudonym, so the numbering depends on the secret, not on raw-id order', () => {
    const ids = Array.from({ length: 20 }, (_, i) => `PAT-${String(i).padStart(4, '0')}`);
    const a = assignPatientClasses(secret, ids);
    const sortedByPseudonym = [...ids].sort((x, y) =>
      pseudonymize(secret, x) < pseudonymize(secret, y) ? -1 : 1,
    );
    expect(Array.from(a.labels)).toEqual(ids.map((id) => sortedByPseudonym.indexOf(id)));
    expect(Array.from(a.labels)).not.toEqual(ids.map((_, i) => i));
    expect(Array.from(assignPatientClasses(otherSecret, ids).labels)).not.toEqual(Array.from(a.labels));
  });
});

describe('assignTagClasses', () => {
  it('sorts values and gives missing values one shared class', () => {
    const r = assignTagClasses(['lateral', 'AP', null, 'AP', '']);
    expect(Array.from(r.labels)).toEqual([1, 0, 2, 0, 2]);
    expect(r.classes).toBe(3);
    expect(assignTagClasses(['b', 'a']).classes).toBe(2);
  });
});
