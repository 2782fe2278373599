import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFedsslError } from '../errors';
import { assertBytes, concatBytes, equalBytes, fromBase64, toBase64 } from './bytes';
import { createSha256, createSha512, sha256Hex, sha512Hex } from './hash';
import nacl from 'tweetnacl';

describe('base64', () => {
  it('round-trips any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        expect(fromBase64(toBase64(bytes), bytes.length)).toEqual(bytes);
      }),
      { numRuns: 200 },
    );
  });

  it('says how many bytes it expected and got', () => {
    expect(() => fromBase64(toBase64(new Uint8Array(31)), 32)).toThrow('expected base64 of 32 bytes, got 31');
    try {
      fromBase64(toBase64(new Uint8Array(31)), 32);
    } catch (e) {
      expect(isFedsslError(e, 'CRYPTO_INVALID_ARGUMENT')).toBe(true);
    }
  });

  it('rejects junk characters, missing padding and non-canonical trailing bits', () => {
    for (const s of ['AAA$', 'AAAA AAAA', 'AA', 'AAA', 'AB==', 'AAB=', 'AA=A', '====']) {
      expect(() => fromBase64(s), s).toThrow(/base64/);
    }
    expect(fromBase64('AA==')).toEqual(new Uint8Array([0]));
    expect(fromBase64('')).toEqual(new Uint8Array(0));
  });

  it('returns an independent copy', () => {
    const out = fromBase64(toBase64(new Uint8Array([1, 2, 3])));
    expect(out.byteOffset).toBe(0);
    expect(out.buffer.byteLength).toBe(3);
  });
});

describe('assertBytes', () => {
  it('names the expected and actual length', () => {
    expect(() => assertBytes(new Uint8Array(31), 32, 'key')).toThrow(
      'key: expected Uint8Array of length 32, got length=31',
    );
    expect(() => assertBytes('abc', 32, 'key')).toThrow(
      'key: expected Uint8Array of length 32, got type=string',
    );
    expect(() => assertBytes([1, 2], undefined, 'x')).toThrow('x: expected Uint8Array, got type=array');
    expect(() => assertBytes(new Uint8Array(32), 32)).not.toThrow();
  });
});

describe('helpers', () => {
  it('concatBytes and equalBytes', () => {
    const c = concatBytes(new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3]));
    expect(c).toEqual(new Uint8Array([1, 2, 3]));
    expect(equalBytes(c, new Uint8Array([1, 2, 3]))).toBe(true);
    expect(equalBytes(c, new Uint8Array([1, 2, 4]))).toBe(false);
    expect(equalBytes(c, new Uint8Array([1, 2]))).toBe(false);
  });
});

describe('hashes (node:crypto) agree with tweetnacl and known answers', () => {
  it('SHA-256 of "abc" (FIPS 180-2)', () => {
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });

  it('SHA-512 equals nacl.hash, also incrementally and on subarray views', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 500 }), fc.nat(500), (bytes, cut) => {
        const expected = Buffer.from(nacl.hash(bytes)).toString('hex');
        expect(sha512Hex(bytes)).toBe(expected);
        const k = Math.min(cut, bytes.length);
        expect(createSha512().update(bytes.subarray(0, k)).update(bytes.subarray(k)).digestHex()).toBe(
          expected,
        );
        expect(createSha256().update(bytes.subarray(0, k)).update(bytes.subarray(k)).digestHex()).toBe(
          sha256Hex(bytes),
        );
      }),
      { numRuns: 100 },
    );
  });
});
