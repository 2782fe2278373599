import { describe, expect, it } from 'vitest';
import {
  fineTuneTable,
  goals,
  resultLines,
  stat,
  type FineTuneResult,
  type Row,
} from '../../bench/experiments/report';

/** The verdict the experiment tables are judged by: which rows it may rank, and when a goal is unmeasured. */

const row = (label: string, arm: Row['arm'], auc: number, seeds: number[]): Row => ({
  label,
  arm,
  auc: stat(seeds.map(() => auc)),
  aucSeeds: stat(seeds.map(() => auc)),
  accuracy: stat([0.7]),
  seeds,
  steps: seeds.map(() => 100),
  minutes: 1,
});

describe('experiment goals', () => {
  it('ranks only federated rows measured over the most seeds', () => {
    const g = goals([
      row('centralized', 'centralized', 0.73, [1, 2, 3]),
      row('fedavg', 'fedavg', 0.8, [1]), // one seed: not comparable with three-seed means
      row('fedavg + metadata', 'fedavgMeta', 0.7, [1, 2, 3]),
      row('fedema + metadata', 'fedemaMeta', 0.72, [1, 2, 3]),
      row('local-only A', 'local', 0.71, [1, 2, 3]),
    ]);
    expect(g.bestFederated?.label).toBe('fedema + metadata');
    expect(g.gapToCentralized).toBeCloseTo(-1, 6);
    expect(g.gapToBestLocal).toBeCloseTo(1, 6);
    expect(g.metLocal).toBe(true);
  });

  it('leaves the local-only goal unmeasured, not met, when no local-only arm ran', () => {
    const rows = [
      row('centralized', 'centralized', 0.73, [1]),
      row('fedavg + metadata', 'fedavgMeta', 0.7, [1]),
    ];
    const g = goals(rows);
    expect(g.metLocal).toBe(false);
    expect(Number.isNaN(g.gapToBestLocal)).toBe(true);
    expect(resultLines('x', rows).some((l) => l.includes('best_local'))).toBe(false);
  });

  it('judges a federated arm against the stronger recipe of centralized and local-only training', () => {
    const g = goals([
      row('centralized', 'centralized', 0.73, [1, 2, 3]),
      row('centralized, + blur + jitter', 'centralizedAug', 0.75, [1, 2, 3]),
      row('local-only A', 'local', 0.7, [1, 2, 3]),
      row('local-only A, + blur + jitter', 'localAug', 0.74, [1, 2, 3]),
      row('fedavg + metadata, + blur + jitter', 'augAblation', 0.735, [1, 2, 3]),
    ]);
    expect(g.centralized?.label).toBe('centralized, + blur + jitter');
    expect(g.gapToCentralized).toBeCloseTo(-1.5, 6);
    expect(g.metCentralized).toBe(false);
    expect(g.gapToBestLocal).toBeCloseTo(-0.5, 6);
    expect(g.metLocal).toBe(false);
  });
});

describe('fine-tune table', () => {
  const run = (
    label: string,
    seed: number,
    fraction: number,
    auc: number[],
    epochs?: number,
  ): FineTuneResult => ({
    label,
    seed,
    fraction,
    auc,
    accuracy: auc,
    steps: 10,
    seconds: 1,
    ...(epochs !== undefined ? { epochs } : {}),
  });

  it("names each column's journaled epochs and counts seeds × folds per cell", () => {
    const table = fineTuneTable([
      run('random init', 1, 1, [0.7, 0.8], 5),
      run('random init', 2, 1, [0.75, 0.75], 5),
      run('random init', 2, 0.1, [0.6, 0.6], 30),
    ]);
    expect(table).toContain('fine-tune AUC, 10 % labels, 30 epochs');
    expect(table).toContain('fine-tune AUC, 100 % labels, 5 epochs');
    expect(table).toContain('| random init | 0.600 ± 0.000 (1 × 2) | 0.750 ± 0.041 (2 × 2) |');
  });

  it('says so when the runs of a column used different epochs, and omits unknown epochs', () => {
    const mixed = fineTuneTable([run('a', 1, 1, [0.7], 5), run('a', 2, 1, [0.7], 2)]);
    expect(mixed).toContain('100 % labels, epochs differ between runs');
    const old = fineTuneTable([run('a', 1, 1, [0.7])]);
    expect(old).toContain('| encoder | fine-tune AUC, 100 % labels |');
  });
});
