import type { ArmResult } from './arms';

/**
 * Aggregation of arm results into the experiment table: per row, mean ± sample standard
 * deviation over every (seed, fold) pair, and over the per-seed fold means.
 */

export interface Stat {
  mean: number;
  sd: number;
  n: number;
  min: number;
  max: number;
}

export function stat(xs: readonly number[]): Stat {
  const v = xs.filter((x) => Number.isFinite(x));
  const n = v.length;
  const mean = n ? v.reduce((a, b) => a + b, 0) / n : NaN;
  const sd = n > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd, n, min: n ? Math.min(...v) : NaN, max: n ? Math.max(...v) : NaN };
}

/** One table row. */
export interface Row {
  label: string;
  arm: ArmResult['arm'];
  /** AUC over every seed × fold. */
  auc: Stat;
  /** Per-seed fold means. */
  aucSeeds: Stat;
  accuracy: Stat;
  seeds: number[];
  steps: number[];
  minutes: number;
  /** Federated rows: published rounds and accepted updates per seed. */
  rounds?: number[];
  updates?: number[];
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Rows in first-seen order of their labels. */
export function summarize(results: readonly ArmResult[]): Row[] {
  const byLabel = new Map<string, ArmResult[]>();
  for (const r of results) byLabel.set(r.label, [...(byLabel.get(r.label) ?? []), r]);
  return [...byLabel.entries()].map(([label, rs]) => ({
    label,
    arm: rs[0]!.arm,
    auc: stat(rs.flatMap((r) => r.probe.auc)),
    aucSeeds: stat(rs.map((r) => mean(r.probe.auc))),
    accuracy: stat(rs.flatMap((r) => r.probe.accuracy)),
    seeds: rs.map((r) => r.seed),
    steps: rs.map((r) => r.steps),
    minutes: mean(rs.map((r) => r.seconds)) / 60,
    ...(rs[0]!.federation
      ? {
          rounds: rs.map((r) => r.federation!.publishedRounds),
          updates: rs.map((r) => r.federation!.acceptedUpdates),
        }
      : {}),
  }));
}

const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');

/** The Markdown table of the rows. */
export function markdownTable(rows: readonly Row[]): string {
  const lines = [
    '| arm | probe AUC, mean ± sd over seeds × folds | AUC over seeds (mean ± sd) | accuracy | seeds × folds | optimizer steps per seed | rounds / accepted updates | train min per seed |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.label} | ${f3(r.auc.mean)} ± ${f3(r.auc.sd)} | ${f3(r.aucSeeds.mean)} ± ${f3(r.aucSeeds.sd)} | ` +
        `${f3(r.accuracy.mean)} ± ${f3(r.accuracy.sd)} | ${r.seeds.length} × ${r.auc.n / Math.max(1, r.seeds.length)} | ` +
        `${[...new Set(r.steps)].join(', ')} | ${r.rounds ? `${r.rounds.join(', ')} / ${r.updates!.join(', ')}` : '–'} | ` +
        `${r.minutes.toFixed(1)} |`,
    );
  }
  return lines.join('\n');
}

/** The goals the issue judges the table by, computed from the rows. */
export interface Goals {
  bestFederated: Row | undefined;
  centralized: Row | undefined;
  localRows: Row[];
  /** Best federated − centralized, in AUC points (goal ≥ −1). */
  gapToCentralized: number;
  /** Best federated − best local-only, in AUC points (goal ≥ 0). */
  gapToBestLocal: number;
  metCentralized: boolean;
  metLocal: boolean;
}

const FEDERATED: readonly Row['arm'][] = ['fedavg', 'fedavgMeta', 'fedemaMeta', 'augAblation'];

export function goals(rows: readonly Row[]): Goals {
  const fed = rows.filter((r) => FEDERATED.includes(r.arm));
  // A row measured over fewer seeds (an arm run for one seed only) is not ranked against
  // rows averaged over more: its mean is not comparable.
  const mostSeeds = Math.max(0, ...fed.map((r) => r.seeds.length));
  const bestFederated = fed
    .filter((r) => r.seeds.length === mostSeeds)
    .sort((a, b) => b.auc.mean - a.auc.mean)[0];
  // Against the stronger of the two recipes: a federated arm with blur + jitter does not meet
  // the goal by beating models trained without it.
  const centralized = rows
    .filter((r) => r.arm === 'centralized' || r.arm === 'centralizedAug')
    .sort((a, b) => b.auc.mean - a.auc.mean)[0];
  const localRows = rows.filter((r) => r.arm === 'local' || r.arm === 'localAug');
  // No local-only arm run: the goal is unmeasured (NaN), never "met" by default.
  const bestLocal = localRows.length ? Math.max(...localRows.map((r) => r.auc.mean)) : NaN;
  const gapToCentralized = ((bestFederated?.auc.mean ?? NaN) - (centralized?.auc.mean ?? NaN)) * 100;
  const gapToBestLocal = ((bestFederated?.auc.mean ?? NaN) - bestLocal) * 100;
  return {
    bestFederated,
    centralized,
    localRows,
    gapToCentralized,
    gapToBestLocal,
    metCentralized: gapToCentralized >= -1,
    metLocal: gapToBestLocal >= 0,
  };
}

/** `GE Logiq 7` → `ge_logiq_7`. */
export function slug(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_|_$/g, '');
}

/** Machine-readable lines, after the human table. */
export function resultLines(
  prefix: string,
  rows: readonly Row[],
  extra: Record<string, string> = {},
): string[] {
  const out = rows.map((r) => `RESULT ${prefix}_auc_${slug(r.label)}=${f3(r.auc.mean)} auc`);
  const g = goals(rows);
  if (g.bestFederated && g.centralized)
    out.push(`RESULT ${prefix}_best_federated_minus_centralized=${g.gapToCentralized.toFixed(1)} auc_points`);
  if (g.bestFederated && g.localRows.length)
    out.push(`RESULT ${prefix}_best_federated_minus_best_local=${g.gapToBestLocal.toFixed(1)} auc_points`);
  for (const [k, v] of Object.entries(extra)) out.push(`RESULT ${prefix}_${k}=${v}`);
  return out;
}

/** One fine-tuning evaluation of one encoder, seed and label fraction. */
export interface FineTuneResult {
  label: string;
  seed: number;
  fraction: number;
  auc: number[];
  accuracy: number[];
  steps: number;
  seconds: number;
  /** Fine-tuning epochs of this run (journals written before it was recorded lack it). */
  epochs?: number;
}

/** A fraction's column header: its epochs when every run of it recorded the same number. */
function fractionHeader(f: number, runs: readonly FineTuneResult[]): string {
  const epochs = [...new Set(runs.map((r) => r.epochs))];
  const e =
    epochs.length === 1 && epochs[0] !== undefined
      ? `, ${epochs[0]} epochs`
      : epochs.length > 1
        ? ', epochs differ between runs'
        : '';
  return `fine-tune AUC, ${f * 100} % labels${e}`;
}

/**
 * Rows = encoders, columns = label fractions: AUC mean ± sd over seeds × folds, and how many
 * seeds × folds each cell holds (fractions can have run for different seeds).
 */
export function fineTuneTable(results: readonly FineTuneResult[]): string {
  const fractions = [...new Set(results.map((r) => r.fraction))].sort((a, b) => a - b);
  const labels = [...new Set(results.map((r) => r.label))];
  const lines = [
    `| encoder | ${fractions
      .map((f) =>
        fractionHeader(
          f,
          results.filter((r) => r.fraction === f),
        ),
      )
      .join(' | ')} |`,
    `| --- | ${fractions.map(() => '---').join(' | ')} |`,
  ];
  for (const l of labels) {
    const cells = fractions.map((f) => {
      const rs = results.filter((r) => r.label === l && r.fraction === f);
      const s = stat(rs.flatMap((r) => r.auc));
      const folds = [...new Set(rs.map((r) => r.auc.length))];
      return s.n ? `${f3(s.mean)} ± ${f3(s.sd)} (${rs.length} × ${folds.join('/')})` : '–';
    });
    lines.push(`| ${l} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export function fineTuneResultLines(prefix: string, results: readonly FineTuneResult[]): string[] {
  const out: string[] = [];
  for (const l of new Set(results.map((r) => r.label)))
    for (const f of new Set(results.map((r) => r.fraction))) {
      const s = stat(results.filter((r) => r.label === l && r.fraction === f).flatMap((r) => r.auc));
      if (s.n) out.push(`RESULT ${prefix}_finetune${Math.round(f * 100)}_auc_${slug(l)}=${f3(s.mean)} auc`);
    }
  return out;
}
