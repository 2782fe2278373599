import type { RateLimit } from '../config/config';

/** What {@link TokenBuckets.take} decided for one attempt. */
export type TakeResult =
  | { allowed: true }
  /** `first`: this client was not limited on its previous attempt (log it once, not per attempt). */
  | { allowed: false; retryAfterSeconds: number; first: boolean };

interface Bucket {
  tokens: number;
  /** Clock reading the tokens were last brought up to date at. */
  at: number;
  /** Clock reading of the last attempt (eviction drops the least recent first). */
  used: number;
  /** Set when an attempt was refused; cleared by the next allowed one. */
  limited: boolean;
}

/**
 * Token buckets keyed by client (e.g. `enroll 203.0.113.7`), all with one limit: `count`
 * tokens, refilled evenly over `perSeconds`. Memory is bounded by `maxKeys`: a full bucket
 * is the same as no bucket, so full ones are dropped first; if that frees too little, the
 * least recently used are (their clients start again with a full bucket).
 *
 * @example
 * const b = new TokenBuckets({ count: 10, perSeconds: 60 }, 10_000, () => Date.now());
 * if (!b.take('203.0.113.7').allowed) refuse();
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;

  constructor(
    private readonly limit: RateLimit,
    private readonly maxKeys: number,
    private readonly now: () => number,
  ) {
    this.perMs = limit.count / (limit.perSeconds * 1000);
  }

  /** Spends one token of `key` if it has one. */
  take(key: string): TakeResult {
    const b = this.touch(key);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.limited = false;
      return { allowed: true };
    }
    const first = !b.limited;
    b.limited = true;
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / this.perMs / 1000)),
      first,
    };
  }

  /** Gives back the token of an attempt that turned out legitimate (never above `count`). */
  refund(key: string): void {
    const b = this.buckets.get(key);
    if (!b) return;
    this.refill(b);
    b.tokens = Math.min(this.limit.count, b.tokens + 1);
  }

  /** Buckets held now (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  private refill(b: Bucket): void {
    const t = this.now();
    b.tokens = Math.min(this.limit.count, b.tokens + Math.max(0, t - b.at) * this.perMs);
    b.at = t;
  }

  /**
   * The bucket of `key`, brought up to date and stamped as used. Not moved to the end of the
   * Map: deleting and re-adding one key of a Map of thousands cost V8 ~28 µs a time (measured);
   * recency only matters when evicting, which sorts by `used`.
   */
  private touch(key: string): Bucket {
    let b = this.buckets.get(key);
    if (b) {
      this.refill(b);
    } else {
      if (this.buckets.size >= this.maxKeys) this.evict();
      b = { tokens: this.limit.count, at: this.now(), used: 0, limited: false };
      this.buckets.set(key, b);
    }
    b.used = b.at;
    return b;
  }

  /**
   * Makes room for at least a tenth of `maxKeys` (so the scan and sort are paid once per many
   * inserts): refilled buckets first, then the least recently used ones.
   */
  private evict(): void {
    const target = Math.floor(this.maxKeys * 0.9);
    const left: [string, Bucket][] = [];
    for (const [k, b] of this.buckets) {
      this.refill(b);
      if (b.tokens >= this.limit.count) this.buckets.delete(k);
      else left.push([k, b]);
    }
    if (left.length <= target) return;
    left.sort((x, y) => x[1].used - y[1].used);
    for (const [k] of left.slice(0, left.length - target)) this.buckets.delete(k);
  }
}
