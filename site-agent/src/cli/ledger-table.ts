import type { LedgerEntry } from '../audit/ledger';

/** Tensor names summarised by their first segment: `encoder 62, projector 6, predictor 6`. */
export function summarizeTensors(names: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const n of names) {
    const part = n.split('.')[0] ?? n;
    counts.set(part, (counts.get(part) ?? 0) + 1);
  }
  return [...counts].map(([p, c]) => `${p} ${c}`).join(', ');
}

/**
 * The ledger as an aligned text table for hospital IT: one row per upload or download
 * with time, direction, run, round, task, bytes, the SHA-256 (first 16 hex digits; `--json`
 * has the full hashes), tensors and the coordinator's verdict.
 */
export function formatLedgerTable(entries: readonly LedgerEntry[]): string[] {
  const header = [
    'TIME (UTC)',
    'DIR',
    'RUN',
    'ROUND',
    'TASK',
    'BYTES',
    'SHA-256',
    'TENSORS',
    'EXAMPLES',
    'RESULT',
  ];
  const rows = entries.map((e) =>
    e.kind === 'privacy'
      ? [
          e.time,
          'dp',
          e.runId,
          String(e.round),
          e.taskId,
          '-',
          '-',
          '-',
          '-',
          `clip ${e.dp.clipNorm}${e.dp.clipFactor < 1 ? ' (clipped)' : ''}, noise σ=${e.dp.noiseMultiplier}`,
        ]
      : e.kind === 'download'
        ? [
            e.time,
            'in',
            e.runId,
            String(e.round),
            e.taskId,
            String(e.bytes),
            `${e.modelSha256.slice(0, 16)}…`,
            '-',
            '-',
            `model ${e.modelVersion} ${e.verified ? 'verified' : 'UNVERIFIED'}`,
          ]
        : [
            e.time,
            'out',
            e.runId,
            String(e.round),
            e.taskId,
            String(e.bytesSent),
            `${e.plaintextSha256.slice(0, 16)}…`,
            summarizeTensors(e.tensors),
            String(e.exampleCount),
            e.accepted
              ? `accepted${e.updateId ? ` ${e.updateId}` : ''}`
              : `REJECTED${e.error ? ` ${e.error.code}` : ''}`,
          ],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const numeric = new Set([3, 5, 8]);
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}
