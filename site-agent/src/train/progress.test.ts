import pino from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressReporter, formatDuration, formatProgressLine } from './progress';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        cb();
      },
    }),
  );
  return { logger, lines };
}

const sample = (step: number) => ({
  step,
  totalSteps: 100,
  loss: 1.23456,
  imagesPerSecond: 50,
  etaSeconds: 73,
});

describe('progress', () => {
  it('formats durations and a bar line within the terminal width', () => {
    expect(formatDuration(5)).toBe('5s');
    expect(formatDuration(73)).toBe('1m13s');
    expect(formatDuration(3723)).toBe('1h02m');
    expect(formatDuration(NaN)).toBe('--');
    const line = formatProgressLine(sample(50), 80);
    expect(line).toBe('[##############..............]   50/100 steps  loss 1.235  50.0 img/s  ETA 1m13s');
    expect(line.length).toBeLessThanOrEqual(80);
    expect(formatProgressLine(sample(50), 40).length).toBeLessThanOrEqual(40);
  });

  it('draws on a TTY only and logs the same figures at most every few seconds', async () => {
    let now = 0;
    const { logger, lines } = capture();
    const tty: string[] = [];
    const r = new ProgressReporter({
      logger,
      stream: { isTTY: true, columns: 100, write: (s: string) => tty.push(s) },
      logEverySeconds: 5,
      now: () => now,
    });
    r.update(sample(1));
    now = 1000;
    r.update(sample(2)); // drawn, not logged (1 s since the last log)
    now = 6000;
    r.update(sample(3)); // drawn and logged
    r.finish();
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    expect(lines.map((l) => l.step)).toEqual([1, 3]);
    expect(lines[1]).toMatchObject({ totalSteps: 100, loss: 1.2346, imagesPerSecond: 50, etaSeconds: 73 });
    expect(tty).toHaveLength(4);
    expect(tty[2]).toContain('3/100 steps');
    expect(tty[3]).toBe('\n');

    const piped: string[] = [];
    const r2 = new ProgressReporter({
      logger,
      stream: { isTTY: false, write: (s: string) => piped.push(s) },
    });
    r2.update(sample(1));
    r2.finish();
    expect(piped).toEqual([]);
  });
});
