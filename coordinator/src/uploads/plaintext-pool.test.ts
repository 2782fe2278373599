import { describe, expect, it } from 'vitest';
import { PlaintextPool } from './plaintext-pool';

describe('PlaintextPool', () => {
  it('hands a recycled buffer out again for an update of about the same size, its spare tail zeroed', () => {
    const pool = new PlaintextPool(() => true);
    const a = pool.acquire(100_000);
    expect(a.length).toBe(100_000);
    a.fill(7);
    pool.recycle([new Float32Array(a.buffer, 0, 8)]);
    expect(pool.idleBytes).toBe(a.buffer.byteLength);
    // 3 bytes longer (an int8 update with a longer scale in its manifest): same buffer.
    const b = pool.acquire(100_003);
    expect(b.buffer).toBe(a.buffer);
    expect(b.length).toBe(100_003);
    expect(pool.idleBytes).toBe(0);
    expect(b[99_999]).toBe(7); // the caller overwrites the whole view
    expect(new Uint8Array(b.buffer, 100_003).every((x) => x === 0)).toBe(true);
  });

  it('does not lend a large idle buffer for a small update, nor a small one for a large update', () => {
    const pool = new PlaintextPool(() => true);
    const big = pool.acquire(1_000_000);
    pool.recycle([big]);
    expect(pool.acquire(10_000).buffer).not.toBe(big.buffer);
    expect(pool.acquire(2_000_000).buffer).not.toBe(big.buffer);
    expect(pool.acquire(1_000_000).buffer).toBe(big.buffer);
  });

  it('takes back only its own buffers, each once, and only while there is room', () => {
    let room = 200_000;
    // Annotated: the admission callback reads the pool it is passed to.
    const pool: PlaintextPool = new PlaintextPool((n: number) => pool.idleBytes + n <= room);
    const a = pool.acquire(100_000);
    pool.recycle([new Uint8Array(100_000), a, a.subarray(10)]);
    expect(pool.idleBytes).toBe(a.buffer.byteLength);
    const b = pool.acquire(150_000);
    pool.recycle([b]);
    expect(pool.idleBytes).toBe(a.buffer.byteLength); // no room left for b
    room = 1_000_000;
    pool.recycle([b]);
    expect(pool.idleBytes).toBe(a.buffer.byteLength + b.buffer.byteLength);
    pool.trim(b.buffer.byteLength);
    expect(pool.idleBytes).toBe(b.buffer.byteLength); // the oldest went first
    expect(pool.acquire(150_000).buffer).toBe(b.buffer);
  });
});
