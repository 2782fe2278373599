import type { Logger } from 'pino';

/** One progress sample of a training run. */
export interface ProgressSample {
  step: number;
  /** Known or estimated total steps (an estimate when training for a time budget). */
  totalSteps: number;
  loss: number;
  imagesPerSecond: number;
  etaSeconds: number;
}

/** Where the bar goes: process.stderr in the CLI, a recorder in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

/** `73s` → `1m13s`, `3723s` → `1h02m`; `--` when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * One line of the terminal bar, at most `columns` characters:
 * `[#####.....]  120/400 steps  loss 1.234  56.7 img/s  ETA 1m13s`.
 */
export function formatProgressLine(p: ProgressSample, columns = 80): string {
  const frac = p.totalSteps > 0 ? Math.min(1, Math.max(0, p.step / p.totalSteps)) : 0;
  const text = `${String(p.step).padStart(String(p.totalSteps).length)}/${p.totalSteps} steps  loss ${
    Number.isFinite(p.loss) ? p.loss.toFixed(3) : '--'
  }  ${p.imagesPerSecond.toFixed(1)} img/s  ETA ${formatDuration(p.etaSeconds)}`;
  const barWidth = Math.max(0, Math.min(30, columns - text.length - 4));
  if (barWidth < 5) return text.slice(0, columns);
  const filled = Math.round(frac * barWidth);
  return `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]  ${text}`;
}

/**
 * Reports training progress two ways: a bar redrawn in place on a terminal (only when the
 * stream is a TTY, so logs piped to a file stay clean) and a pino `info` line with the same
 * figures at most every `logEverySeconds`. The clock is injectable for tests.
 */
export class ProgressReporter {
  private lastLog = -Infinity;
  private lastDraw = -Infinity;
  private drawn = false;
  private readonly now: () => number;

  constructor(
    private readonly opts: {
      logger: Logger;
      stream?: ProgressStream;
      /** Seconds between pino lines (default 5). */
      logEverySeconds?: number;
      /** Milliseconds clock (default performance.now). */
      now?: () => number;
    },
  ) {
    this.now = opts.now ?? (() => performance.now());
  }

  update(p: ProgressSample): void {
    const t = this.now();
    const stream = this.opts.stream;
    // Redraw at most 10× a second: a terminal is slower than a tiny model's steps.
    if (stream?.isTTY && t - this.lastDraw >= 100) {
      this.lastDraw = t;
      stream.write(`\r${formatProgressLine(p, (stream.columns ?? 80) - 1)}\x1b[K`);
      this.drawn = true;
    }
    if (t - this.lastLog >= (this.opts.logEverySeconds ?? 5) * 1000) {
      this.lastLog = t;
      this.opts.logger.info(
        {
          step: p.step,
          totalSteps: p.totalSteps,
          loss: Number.isFinite(p.loss) ? Number(p.loss.toFixed(4)) : null,
          imagesPerSecond: Number(p.imagesPerSecond.toFixed(1)),
          etaSeconds: Number.isFinite(p.etaSeconds) ? Math.round(p.etaSeconds) : null,
        },
        'training progress',
      );
    }
  }

  /** End the bar's line so later output starts on a fresh line. */
  finish(): void {
    if (this.drawn) this.opts.stream?.write('\n');
    this.drawn = false;
  }
}
