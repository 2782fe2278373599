import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import {
  ed25519Sign,
  ed25519Verify,
  hasCanonicalScalar,
  setSignatureBackend,
  signatureBackend,
} from './ed25519';
import { signBytes, verifyBytes } from './sign';
import { toBase64 } from './bytes';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** L, the order of the Ed25519 base point, little-endian. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const scalarOf = (sig: Uint8Array): bigint => BigInt(`0x${hex(sig.slice(32).reverse())}`);
function withScalar(sig: Uint8Array, s: bigint): Uint8Array {
  const out = Uint8Array.from(sig);
  for (let i = 0; i < 32; i++) out[32 + i] = Number((s >> BigInt(8 * i)) & 0xffn);
  return out;
}

const seedArb = fc.uint8Array({ minLength: 32, maxLength: 32 });
const messageArb = fc.uint8Array({ maxLength: 600 });

afterEach(() => {
  setSignatureBackend('auto');
});

describe('Ed25519 through node:crypto against tweetnacl (reference)', () => {
  it('uses node:crypto on this runtime', () => {
    expect(signatureBackend()).toBe('node-crypto');
  });

  it('signs byte-identically and both accept each other’s valid signatures (fast-check)', () => {
    fc.assert(
      fc.property(seedArb, messageArb, (seed, m) => {
        const { publicKey, secretKey } = nacl.sign.keyPair.fromSeed(seed);
        const reference = nacl.sign.detached(m, secretKey);
        const fast = ed25519Sign(m, secretKey);
        expect(hex(fast)).toBe(hex(reference));
        expect(ed25519Verify(m, reference, publicKey)).toBe(true);
        expect(nacl.sign.detached.verify(m, fast, publicKey)).toBe(true);
      }),
      { numRuns: 60 },
    );
  }, 120_000);

  it('agrees with tweetnacl on every single-bit flip of message, signature and key (fast-check)', () => {
    fc.assert(
      fc.property(seedArb, fc.uint8Array({ minLength: 1, maxLength: 120 }), fc.nat(), (seed, m, at) => {
        const { publicKey, secretKey } = nacl.sign.keyPair.fromSeed(seed);
        const sig = ed25519Sign(m, secretKey); // byte-identical to tweetnacl's (test above)
        const total = (m.length + sig.length + publicKey.length) * 8;
        const bit = at % total;
        const [msg, s, pk] = [Uint8Array.from(m), Uint8Array.from(sig), Uint8Array.from(publicKey)];
        const flip = (a: Uint8Array, b: number): void => {
          a[b >> 3]! ^= 1 << (b & 7);
        };
        if (bit < m.length * 8) flip(msg, bit);
        else if (bit < (m.length + 64) * 8) flip(s, bit - m.length * 8);
        else flip(pk, bit - (m.length + 64) * 8);
        const reference = nacl.sign.detached.verify(msg, s, pk);
        expect(ed25519Verify(msg, s, pk)).toBe(reference);
        // A single flip never turns a valid signature into another valid one.
        expect(reference).toBe(false);
      }),
      { numRuns: 150 },
    );
  }, 120_000);

  it('every bit of one signature flipped in turn is refused (tweetnacl agrees, checked on every 4th bit)', () => {
    const { publicKey, secretKey } = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(9));
    const m = new TextEncoder().encode('fedssl-update-v1\n{"round":1}');
    const sig = ed25519Sign(m, secretKey);
    for (let bit = 0; bit < 512; bit++) {
      const bad = Uint8Array.from(sig);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      expect(ed25519Verify(m, bad, publicKey)).toBe(false);
      // tweetnacl takes ~10 ms a verify: a quarter of the bits keeps this test short.
      if (bit % 4 === 0) expect(nacl.sign.detached.verify(m, bad, publicKey)).toBe(false);
    }
  }, 120_000);

  it('refuses a non-reduced scalar S + L on both paths, which bare tweetnacl would accept', () => {
    const { publicKey, secretKey } = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(3));
    const m = new Uint8Array([1, 2, 3]);
    const sig = nacl.sign.detached(m, secretKey);
    const malleated = withScalar(sig, scalarOf(sig) + L);
    expect(scalarOf(malleated) < 2n ** 256n).toBe(true);
    expect(hasCanonicalScalar(sig)).toBe(true);
    expect(hasCanonicalScalar(malleated)).toBe(false);
    expect(hasCanonicalScalar(withScalar(sig, L))).toBe(false);
    expect(hasCanonicalScalar(withScalar(sig, L - 1n))).toBe(true);
    expect(nacl.sign.detached.verify(m, malleated, publicKey)).toBe(true);
    for (const backend of ['node-crypto', 'tweetnacl'] as const) {
      setSignatureBackend(backend);
      expect(ed25519Verify(m, sig, publicKey)).toBe(true);
      expect(ed25519Verify(m, malleated, publicKey)).toBe(false);
    }
  });

  it('the tweetnacl fallback gives the same answers through signBytes / verifyBytes', () => {
    const { publicKey, secretKey } = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(5));
    const m = new Uint8Array([7, 7, 7]);
    const fast = signBytes(m, secretKey);
    setSignatureBackend('tweetnacl');
    expect(signatureBackend()).toBe('tweetnacl');
    expect(signBytes(m, secretKey)).toBe(fast);
    expect(verifyBytes(m, fast, publicKey)).toBe(true);
    expect(verifyBytes(new Uint8Array([7, 7, 8]), fast, publicKey)).toBe(false);
  });

  it('a secret key mutated in place is not signed for with its old cached key', () => {
    const a = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(1));
    const b = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(2));
    const m = new Uint8Array([4]);
    const sk = Uint8Array.from(a.secretKey);
    expect(hex(ed25519Sign(m, sk))).toBe(hex(nacl.sign.detached(m, a.secretKey)));
    sk.set(b.secretKey);
    expect(hex(ed25519Sign(m, sk))).toBe(hex(nacl.sign.detached(m, b.secretKey)));
  });

  it('a secret key whose public half is not its seed’s signs as tweetnacl does', () => {
    const a = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(1));
    const b = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(2));
    const odd = Uint8Array.from([...a.secretKey.subarray(0, 32), ...b.publicKey]);
    const m = new Uint8Array([4, 5]);
    expect(toBase64(ed25519Sign(m, odd))).toBe(toBase64(nacl.sign.detached(m, odd)));
  });
});
