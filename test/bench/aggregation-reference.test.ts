import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * `npm run bench -- aggregation` on a tiny config: fedssl's FedAvg, read from sealed envelopes
 * through `aggregateRound`, and the numpy reference (bench/reference/weighted_average.py) on the
 * same plaintext deltas must give the same weights. Both sum w·x in float64 in site order and
 * round once, so they agree bit for bit; 1e-6 is the stated bound. Needs Debian's python3-numpy.
 */

const root = join(__dirname, '..', '..');
const hasNumpy = spawnSync('/usr/bin/python3', ['-c', 'import numpy']).status === 0;

describe.skipIf(!hasNumpy)('aggregation bench: fedssl FedAvg vs the numpy weighted average', () => {
  it('agrees within 1e-6 on 3 updates of ~10k parameters', () => {
    const r = spawnSync(
      process.execPath,
      [
        join(root, 'bench', 'run.mjs'),
        'aggregation',
        '--updates',
        '3',
        '--params',
        '1e4',
        '--strategies',
        'fedavg',
        '--budget-min',
        '1',
      ],
      { cwd: root, encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    const diff = r.stdout.match(/^RESULT aggregation_fedavg_vs_numpy_3x10k_max_abs_diff=(\S+)$/m);
    expect(diff, r.stdout).not.toBeNull();
    expect(Number(diff![1])).toBeLessThanOrEqual(1e-6);
    expect(r.stdout).toMatch(/^RESULT aggregation_ratio_fedssl_over_numpy_fedavg_3x10k=[\d.]+ x$/m);
    expect(r.stdout).toMatch(/^RESULT aggregation_fedavg_3x10k_peak_rss=\d+ MiB$/m);
  }, 60_000);
});
