/**
 * Exponential backoff with jitter, with the clock and randomness injected (Flower's
 * RetryInvoker): tests drive retries without sleeping, and production uses timers.
 */

/** Time source and waiting, injectable for tests. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolve after `ms`, or reject with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** Backoff parameters. */
export interface BackoffPolicy {
  /** Delay before the first retry (default 1000 ms). */
  initialMs: number;
  /** Upper bound of one delay (default 60 000 ms). */
  maxMs: number;
  /** Growth per attempt (default 2). */
  factor: number;
  /** Relative jitter in [0, 1]: the delay is spread over ±jitter around its base (default 0.5). */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000, factor: 2, jitter: 0.5 };

/**
 * Delay before retry number `attempt` (0-based): min(maxMs, initialMs·factor^attempt),
 * spread uniformly over ±jitter so that many sites restarting together do not reconnect in
 * lockstep.
 * @example backoffDelay(3, DEFAULT_BACKOFF, () => 0.5) // 8000
 */
export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.maxMs, policy.initialMs * Math.pow(policy.factor, Math.max(0, attempt)));
  const spread = 1 - policy.jitter + 2 * policy.jitter * random();
  return Math.max(0, Math.round(Math.min(policy.maxMs, base * spread)));
}

/** Options of {@link retry}. */
export interface RetryOptions {
  /** Total attempts including the first (default 5; Infinity retries forever). */
  attempts?: number;
  policy?: BackoffPolicy;
  clock?: Clock;
  random?: () => number;
  /** Whether an error is worth retrying (default: always). */
  isRetryable?: (e: unknown) => boolean;
  /** Called before each wait, e.g. to log. */
  onRetry?: (e: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
}

/**
 * Run `fn` until it succeeds, waiting with {@link backoffDelay} between attempts.
 * Rethrows the last error when attempts run out or the error is not retryable.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 5;
  const clock = opts.clock ?? systemClock;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt + 1 >= attempts || (opts.isRetryable && !opts.isRetryable(e)) || opts.signal?.aborted)
        throw e;
      const delay = backoffDelay(attempt, opts.policy ?? DEFAULT_BACKOFF, opts.random ?? Math.random);
      opts.onRetry?.(e, attempt, delay);
      await clock.sleep(delay, opts.signal);
    }
  }
}
