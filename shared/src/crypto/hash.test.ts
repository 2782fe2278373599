import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { toHex } from './bytes';
import { createSha256, createSha512, sha256Hex, sha512Hex } from './hash';

describe('SHA-512 via node:crypto against tweetnacl (reference)', () => {
  it('one-shot and incremental digests match nacl.hash for random inputs and splits (fast-check)', () => {
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.integer({ min: 0, max: 20_000 }).map((n) => new Uint8Array(randomBytes(n))),
    );
    fc.assert(
      fc.property(input, fc.array(fc.nat(), { maxLength: 4 }), (bytes, cuts) => {
        const expected = toHex(nacl.hash(bytes));
        expect(sha512Hex(bytes)).toBe(expected);
        const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const h = createSha512();
        let prev = 0;
        for (const c of [...at, bytes.length]) {
          h.update(bytes.subarray(prev, c));
          prev = c;
        }
        expect(h.digestHex()).toBe(expected);
      }),
      { numRuns: 200 },
    );
  });

  it('hashes the bytes of a view, not its whole backing buffer', () => {
    const big = new Uint8Array(randomBytes(100));
    const view = big.subarray(10, 60);
    expect(sha512Hex(view)).toBe(toHex(nacl.hash(Uint8Array.from(view))));
  });

  it('SHA-256 known answers (FIPS 180-2 "abc" and the empty string)', () => {
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    expect(createSha256().digestHex()).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });
});
