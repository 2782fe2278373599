import { describe, expect, it } from 'vitest';
import { clientAddress } from './client-address';
import { TokenBuckets } from './token-buckets';

describe('TokenBuckets', () => {
  const clock = (start = 0) => {
    const c = { t: start, now: () => c.t };
    return c;
  };

  it('allows `count` attempts, refuses the next with the wait for one token, refills evenly', () => {
    const c = clock();
    const b = new TokenBuckets({ count: 3, perSeconds: 60 }, 100, c.now);
    for (let i = 0; i < 3; i++) expect(b.take('a').allowed).toBe(true);
    expect(b.take('a')).toEqual({ allowed: false, retryAfterSeconds: 20, first: true });
    // Still limited: not `first` again (the caller logs once per limited client).
    c.t += 5_000;
    expect(b.take('a')).toEqual({ allowed: false, retryAfterSeconds: 15, first: false });
    // Another client has its own bucket.
    expect(b.take('b').allowed).toBe(true);
    c.t += 15_000;
    expect(b.take('a').allowed).toBe(true);
    expect(b.take('a')).toMatchObject({ allowed: false, first: true });
  });

  it('gives a refunded attempt back, never above the limit', () => {
    const c = clock();
    const b = new TokenBuckets({ count: 2, perSeconds: 60 }, 100, c.now);
    for (let i = 0; i < 10; i++) {
      expect(b.take('a').allowed).toBe(true);
      b.refund('a');
    }
    b.refund('a');
    b.refund('a');
    expect(b.take('a').allowed).toBe(true);
    expect(b.take('a').allowed).toBe(true);
    expect(b.take('a').allowed).toBe(false);
  });

  it('keeps at most maxKeys buckets: refilled ones go first, then the least recently used', () => {
    const c = clock();
    const b = new TokenBuckets({ count: 1, perSeconds: 60 }, 10, c.now);
    for (let i = 0; i < 10; i++) b.take(`old-${i}`);
    c.t += 60_000; // every old bucket is full again: forgetting them loses nothing
    b.take('limited');
    expect(b.size).toBe(1);
    expect(b.take('limited').allowed).toBe(false);

    for (let i = 0; i < 100_000; i++) b.take(`spray-${i}`);
    expect(b.size).toBeLessThanOrEqual(10);
    // The last client seen is still remembered as limited.
    expect(b.take('spray-99999')).toMatchObject({ allowed: false });
  });
});

describe('TokenBuckets eviction order', () => {
  it('forgets the bucket used least recently, not the one created first', () => {
    const c = { t: 0, now: () => c.t };
    const b = new TokenBuckets({ count: 1, perSeconds: 3600 }, 10, c.now);
    b.take('attacker'); // created first, its token spent
    for (let i = 0; i < 9; i++) {
      c.t += 1;
      b.take(`s${i}`);
    }
    c.t += 1;
    expect(b.take('attacker').allowed).toBe(false); // used again: now the most recent
    c.t += 1;
    b.take('newcomer'); // full: one bucket must go, s0 (least recently used)
    expect(b.size).toBe(10);
    expect(b.take('attacker').allowed).toBe(false);
    expect(b.take('s0').allowed).toBe(true);
  });
});

describe('clientAddress', () => {
  it('is the TCP peer when no proxy is trusted, whatever X-Forwarded-For claims', () => {
    expect(clientAddress('10.0.0.2', '198.51.100.9', 0)).toBe('10.0.0.2');
    expect(clientAddress('::ffff:127.0.0.1', undefined, 0)).toBe('127.0.0.1');
    expect(clientAddress(undefined, undefined, 0)).toBe('unknown');
  });

  it('behind N proxies is the N-th X-Forwarded-For entry from the right (the left-most if fewer)', () => {
    // The client forged the first entry; the proxy appended the address it saw.
    expect(clientAddress('10.0.0.1', 'forged, 198.51.100.9', 1)).toBe('198.51.100.9');
    expect(clientAddress('10.0.0.2', '198.51.100.9, 10.0.0.1', 2)).toBe('198.51.100.9');
    expect(clientAddress('10.0.0.2', ['198.51.100.9', '10.0.0.1'], 2)).toBe('198.51.100.9');
    expect(clientAddress('10.0.0.2', '198.51.100.9', 5)).toBe('198.51.100.9');
    expect(clientAddress('10.0.0.2', undefined, 1)).toBe('10.0.0.2');
  });
});
