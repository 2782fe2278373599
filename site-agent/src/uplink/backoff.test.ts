import { describe, expect, it } from 'vitest';
import { DEFAULT_BACKOFF, backoffDelay, retry, type Clock } from './backoff';

/** A fake clock that records requested sleeps and returns at once. */
function fakeClock(): Clock & { sleeps: number[] } {
  const sleeps: number[] = [];
  return { sleeps, now: () => 0, sleep: async (ms) => void sleeps.push(ms) };
}

describe('backoffDelay', () => {
  it('grows exponentially, is capped, and spreads by ±jitter', () => {
    const mid = () => 0.5;
    expect([0, 1, 2, 3, 10].map((a) => backoffDelay(a, DEFAULT_BACKOFF, mid))).toEqual([
      1000, 2000, 4000, 8000, 60_000,
    ]);
    expect(backoffDelay(2, DEFAULT_BACKOFF, () => 0)).toBe(2000);
    expect(backoffDelay(2, DEFAULT_BACKOFF, () => 0.999999)).toBe(6000);
    expect(backoffDelay(10, DEFAULT_BACKOFF, () => 0.999999)).toBe(60_000);
    expect(backoffDelay(1, { ...DEFAULT_BACKOFF, jitter: 0 }, () => 0.9)).toBe(2000);
  });
});

describe('retry', () => {
  it('retries with backoff until success, without real sleeping', async () => {
    const clock = fakeClock();
    let calls = 0;
    const seen: number[] = [];
    const result = await retry(
      async () => {
        calls++;
        if (calls < 4) throw new Error(`fail ${calls}`);
        return 'done';
      },
      { clock, random: () => 0.5, onRetry: (_e, attempt) => seen.push(attempt) },
    );
    expect(result).toBe('done');
    expect(calls).toBe(4);
    expect(clock.sleeps).toEqual([1000, 2000, 4000]);
    expect(seen).toEqual([0, 1, 2]);
  });

  it('gives up after the attempts and on non-retryable errors', async () => {
    const clock = fakeClock();
    await expect(
      retry(async () => Promise.reject(new Error('always')), { attempts: 3, clock, random: () => 0.5 }),
    ).rejects.toThrow('always');
    expect(clock.sleeps).toHaveLength(2);
    const clock2 = fakeClock();
    await expect(
      retry(async () => Promise.reject(new Error('fatal')), {
        clock: clock2,
        isRetryable: (e) => (e as Error).message !== 'fatal',
      }),
    ).rejects.toThrow('fatal');
    expect(clock2.sleeps).toHaveLength(0);
  });
});
