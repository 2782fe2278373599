import type { AdminClient } from './admin-client';
import { CliError, type CliIo } from './io';
import { runDetailAnswer, type RunDetailAnswer } from './responses';

export interface WaitOptions {
  runId: string;
  /** Give up after this many seconds (undefined = wait forever). */
  timeoutSeconds?: number;
  json: boolean;
  /** Injected for tests: waits between polls and reads time. */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One line per newly published round: version and each accepted site's loss and examples. */
export function formatPublishedRound(r: RunDetailAnswer['rounds'][number]): string {
  const sites = r.participants
    .filter((p) => p.state === 'accepted')
    .map((p) => {
      const loss = p.metrics?.['loss'];
      return `${p.siteName ?? p.siteId} loss=${loss === undefined ? '?' : loss.toFixed(4)} examples=${p.exampleCount ?? '?'}`;
    });
  return `round ${r.round} published ${r.modelVersion ?? '?'}: ${sites.length ? sites.join(', ') : 'no sites'}`;
}

/**
 * Polls the run every second, printing each newly published round. Resolves with exit
 * code 0 when the run completes, 1 when it fails, is cancelled or the timeout passes.
 */
export async function waitForRun(client: AdminClient, io: CliIo, opts: WaitOptions): Promise<number> {
  const sleep = opts.sleep ?? defaultSleep;
  const now = opts.now ?? Date.now;
  const started = now();
  const printed = new Set<number>();
  for (;;) {
    const run = await client.getChecked(`/runs/${encodeURIComponent(opts.runId)}`, runDetailAnswer);
    for (const r of [...run.rounds].sort((a, b) => a.round - b.round)) {
      if (r.state !== 'published' || printed.has(r.round)) continue;
      printed.add(r.round);
      io.stdout(
        opts.json
          ? `${JSON.stringify({ event: 'round-published', runId: run.id, ...r })}\n`
          : `${formatPublishedRound(r)}\n`,
      );
    }
    if (run.state === 'completed') {
      io.stdout(
        opts.json
          ? `${JSON.stringify({ event: 'run-completed', runId: run.id })}\n`
          : `run ${run.id} completed\n`,
      );
      return 0;
    }
    if (run.state === 'failed' || run.state === 'cancelled') {
      io.stderr(
        `error: RUN_${run.state.toUpperCase()}: run ${run.id} ${run.state}${run.reason ? `: ${run.reason}` : ''}\n`,
      );
      return 1;
    }
    if (opts.timeoutSeconds !== undefined && now() - started >= opts.timeoutSeconds * 1000) {
      throw new CliError('TIMEOUT', `run ${run.id} is still ${run.state} after ${opts.timeoutSeconds}s`);
    }
    await sleep(1000);
  }
}
