import { describe, expect, it } from 'vitest';
import { OpenedUpdates, type OpenedUpdate } from './opened-updates';

/** A decoded delta of `n` float32 values whose two tensors view one buffer, as `decodeDelta` returns. */
function delta(n: number): OpenedUpdate {
  const data = new Float32Array(n);
  return {
    kind: 'delta',
    tensors: [
      { name: 'a', shape: [n / 2], data: data.subarray(0, n / 2) },
      { name: 'b', shape: [n / 2], data: data.subarray(n / 2) },
    ],
  };
}

describe('OpenedUpdates', () => {
  it('counts shared buffers once, hands an entry out once', () => {
    const c = new OpenedUpdates(1000);
    const d = delta(100);
    expect(c.put('u1', 'run', 1, d)).toBe(true);
    expect(c.bytes).toBe(400);
    expect(c.put('u2', 'run', 1, { kind: 'masked', plain: new Uint8Array(100) })).toBe(true);
    expect(c.bytes).toBe(500);
    expect(c.take('u1')).toBe(d);
    expect(c.take('u1')).toBeUndefined();
    expect(c.bytes).toBe(100);
    expect(c.size).toBe(1);
  });

  it('evicts the oldest entries to make room and refuses one larger than the budget', () => {
    const c = new OpenedUpdates(1000);
    c.put('u1', 'run', 1, delta(100));
    c.put('u2', 'run', 1, delta(100));
    c.put('u3', 'run', 2, delta(100));
    expect(c.put('u4', 'run', 2, delta(150))).toBe(true); // 600 bytes: u1 and u2 go
    expect([c.take('u1'), c.take('u2')]).toEqual([undefined, undefined]);
    expect(c.bytes).toBe(1000);
    expect(c.put('big', 'run', 2, delta(260))).toBe(false);
    expect(c.bytes).toBe(1000);
    expect(c.take('u3')).toBeDefined();
    expect(new OpenedUpdates(0).put('u', 'run', 1, delta(2))).toBe(false);
  });

  it('putting an id again replaces its entry', () => {
    const c = new OpenedUpdates(1000);
    c.put('u1', 'run', 1, delta(100));
    const again = delta(50);
    c.put('u1', 'run', 1, again);
    expect(c.bytes).toBe(200);
    expect(c.take('u1')).toBe(again);
  });

  it('drops a round (every attempt) or a whole run', () => {
    const c = new OpenedUpdates(10_000);
    c.put('r1a', 'run', 1, delta(10));
    c.put('r2a', 'run', 2, delta(10));
    c.put('r2b', 'run', 2, delta(10));
    c.put('other', 'run-2', 2, delta(10));
    c.dropRun('run', 2);
    expect(c.size).toBe(2);
    expect(c.take('r2a')).toBeUndefined();
    c.dropRun('run');
    expect(c.size).toBe(1);
    expect(c.bytes).toBe(40);
    expect(c.take('other')).toBeDefined();
  });
});

describe('OpenedUpdates.buffers', () => {
  it('keeps idle buffers within the budget left by opened updates, and gives them up first', () => {
    const c = new OpenedUpdates(300_000);
    const held = c.buffers.acquire(100_000);
    const t = new Float32Array(held.buffer, 0, 25_000);
    c.put('u1', 'run', 1, { kind: 'delta', tensors: [{ name: 'a', shape: [25_000], data: t }] });
    const idle = c.buffers.acquire(100_000);
    c.buffers.recycle([idle]);
    expect(c.buffers.idleBytes).toBe(idle.buffer.byteLength);
    const over = c.buffers.acquire(100_000);
    c.buffers.recycle([over]);
    expect(c.buffers.idleBytes).toBe(idle.buffer.byteLength); // 3 × 128 KiB would exceed 300 kB
    // A new opened update takes the idle buffer's room rather than evicting u1.
    expect(c.put('u2', 'run', 1, delta(30_000))).toBe(true);
    expect(c.buffers.idleBytes).toBe(0);
    expect(c.take('u1')).toBeDefined();
    expect(new OpenedUpdates(0).buffers.idleBytes).toBe(0);
  });
});
