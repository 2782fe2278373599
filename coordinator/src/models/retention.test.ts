import { describe, expect, it } from 'vitest';
import { planRetention, type RetentionVersion } from './retention';

const v = (runId: string | null, round: number, over: Partial<RetentionVersion> = {}): RetentionVersion => ({
  version: `${runId ?? 'x'}.r${round}`,
  runId,
  round,
  createdAt: `2026-01-01T00:00:${String(10 + round).padStart(2, '0')}.000Z`,
  hasWeights: true,
  weightsBytes: 100,
  ...over,
});

const actions = (d: ReturnType<typeof planRetention>) =>
  Object.fromEntries(d.map((x) => [x.version, x.action]));

describe('planRetention', () => {
  it('keeps the last N of each run and prunes the rest, per run', () => {
    const versions = [v('a', 0), v('a', 1), v('a', 2), v('a', 3), v('b', 0), v('b', 1)];
    const d = planRetention({ versions, retain: 2, marked: new Set(), referenced: new Set() });
    expect(actions(d)).toEqual({
      'a.r0': 'prune',
      'a.r1': 'prune',
      'a.r2': 'keep',
      'a.r3': 'keep',
      'b.r0': 'keep',
      'b.r1': 'keep',
    });
    expect(d.find((x) => x.version === 'a.r3')!.reasons).toEqual(['latest-of-run']);
    expect(d.find((x) => x.version === 'a.r2')!.reasons).toEqual(['within-last-n']);
  });

  it('orders by round, not by input order or publication time', () => {
    const versions = [v('a', 2, { createdAt: '2026-01-01T00:00:00.000Z' }), v('a', 0), v('a', 1)];
    const d = planRetention({ versions, retain: 1, marked: new Set(), referenced: new Set() });
    expect(d.map((x) => [x.version, x.action])).toEqual([
      ['a.r0', 'prune'],
      ['a.r1', 'prune'],
      ['a.r2', 'keep'],
    ]);
  });

  it('keeps versions marked keep or referenced by an active run, and reports already-pruned ones', () => {
    const versions = [
      v('a', 0),
      v('a', 1, { hasWeights: false }),
      v('a', 2),
      v('a', 3),
      v(null, 5),
      v(null, 6),
    ];
    const d = planRetention({
      versions,
      retain: 1,
      marked: new Set(['a.r0']),
      referenced: new Set(['a.r2']),
    });
    expect(actions(d)).toEqual({
      'a.r0': 'keep',
      'a.r1': 'pruned',
      'a.r2': 'keep',
      'a.r3': 'keep',
      'x.r5': 'prune',
      'x.r6': 'keep',
    });
    expect(d.find((x) => x.version === 'a.r0')!.reasons).toEqual(['marked-keep']);
    expect(d.find((x) => x.version === 'a.r2')!.reasons).toEqual(['active-run']);
  });

  it('refuses a retain below 1', () => {
    expect(() =>
      planRetention({ versions: [], retain: 0, marked: new Set(), referenced: new Set() }),
    ).toThrow('retain must be an integer ≥ 1, got 0');
  });
});
