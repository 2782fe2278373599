import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  sign as nodeSign,
  verify as nodeVerify,
  type KeyObject,
} from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { fromBase64, toBase64 } from './bytes';
import {
  fingerprint,
  generatePartyKeys,
  keyId,
  signingKeyPairFromSecretKey,
  boxKeyPairFromSecretKey,
} from './keys';
import { SIGNING_DOMAINS, signBytes, signJson, verifyBytes, verifyJson, signedJsonBytes } from './sign';
import { openChunkData, sealChunkData, chunkNonce } from './chunk-cipher';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (u: Uint8Array): string => Buffer.from(u).toString('hex');

// Raw keys wrapped in DER so node:crypto (OpenSSL) can act as a second implementation.
const ED25519_SPKI_PREFIX = hex('302a300506032b6570032100');
const ED25519_PKCS8_PREFIX = hex('302e020100300506032b657004220420');
const X25519_SPKI_PREFIX = hex('302a300506032b656e032100');
const X25519_PKCS8_PREFIX = hex('302e020100300506032b656e04220420');
const der = (prefix: Uint8Array, raw: Uint8Array): Buffer => Buffer.concat([prefix, raw]);
const edPublic = (pk: Uint8Array): KeyObject =>
  createPublicKey({ key: der(ED25519_SPKI_PREFIX, pk), format: 'der', type: 'spki' });
const edPrivate = (seed: Uint8Array): KeyObject =>
  createPrivateKey({ key: der(ED25519_PKCS8_PREFIX, seed), format: 'der', type: 'pkcs8' });
const xPublic = (pk: Uint8Array): KeyObject =>
  createPublicKey({ key: der(X25519_SPKI_PREFIX, pk), format: 'der', type: 'spki' });
const xPrivate = (sk: Uint8Array): KeyObject =>
  createPrivateKey({ key: der(X25519_PKCS8_PREFIX, sk), format: 'der', type: 'pkcs8' });

// NaCl's crypto_box / crypto_secretbox test vectors (also used by libsodium's tests).
// Alice and Bob's keys are RFC 7748 §6.1's; firstkey = HSalsa20(X25519(alice, bob), 0).
const NACL = {
  aliceSk: hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'),
  alicePk: hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'),
  bobSk: hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb'),
  bobPk: hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f'),
  shared: hex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'),
  firstKey: hex('1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389'),
  nonce: hex('69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37'),
  message:
    hex(`be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c6129
    6cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde
    048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705`),
  boxed: `f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a
    c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae
    90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5`.replace(
    /\s+/g,
    '',
  ),
};

describe('known answers and a second implementation (node:crypto / OpenSSL)', () => {
  it('secretbox (the chunk cipher) matches the NaCl vector and opens it', () => {
    const ct = sealChunkData(NACL.message, NACL.nonce, NACL.firstKey);
    expect(toHex(ct)).toBe(NACL.boxed);
    expect(openChunkData(ct, NACL.nonce, NACL.firstKey)).toEqual(NACL.message);
    ct[20] = (ct[20] ?? 0) ^ 1;
    expect(openChunkData(ct, NACL.nonce, NACL.firstKey)).toBeNull();
  });

  it('box (the key seal) matches the NaCl vector in both directions', () => {
    expect(toHex(nacl.box(NACL.message, NACL.nonce, NACL.bobPk, NACL.aliceSk))).toBe(NACL.boxed);
    expect(nacl.box.open(hex(NACL.boxed), NACL.nonce, NACL.alicePk, NACL.bobSk)).toEqual(NACL.message);
    expect(nacl.box.before(NACL.bobPk, NACL.aliceSk)).toEqual(NACL.firstKey);
  });

  it('X25519: RFC 7748 vector, and tweetnacl agrees with OpenSSL on random keys', () => {
    expect(nacl.scalarMult(NACL.aliceSk, NACL.bobPk)).toEqual(NACL.shared);
    expect(boxKeyPairFromSecretKey(NACL.aliceSk).publicKey).toEqual(NACL.alicePk);
    for (let i = 0; i < 8; i++) {
      const a = generatePartyKeys().box;
      const b = generatePartyKeys().box;
      const ours = nacl.scalarMult(a.secretKey, b.publicKey);
      const theirs = diffieHellman({ privateKey: xPrivate(a.secretKey), publicKey: xPublic(b.publicKey) });
      expect(toHex(ours)).toBe(theirs.toString('hex'));
    }
  });

  it('Ed25519 RFC 8032 test 1 (empty message)', () => {
    const seed = hex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
    const pk = hex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    const kp = nacl.sign.keyPair.fromSeed(seed);
    expect(kp.publicKey).toEqual(pk);
    expect(toHex(fromBase64(signBytes(new Uint8Array(0), kp.secretKey)))).toBe(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
  });

  it('Ed25519 signatures are byte-identical to OpenSSL and verify there', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ maxLength: 300 }),
        (seed, msg) => {
          const kp = nacl.sign.keyPair.fromSeed(seed);
          const ours = fromBase64(signBytes(msg, kp.secretKey), 64);
          expect(toHex(ours)).toBe(nodeSign(null, msg, edPrivate(seed)).toString('hex'));
          expect(nodeVerify(null, msg, edPublic(kp.publicKey), ours)).toBe(true);
          const theirs = nodeSign(null, msg, edPrivate(seed));
          expect(verifyBytes(msg, theirs.toString('base64'), kp.publicKey)).toBe(true);
        },
      ),
      { numRuns: 30 },
    );
  });
});

describe('signBytes / verifyBytes', () => {
  const { signing } = generatePartyKeys();
  const msg = new TextEncoder().encode('hello');

  it('verifies its own signature and rejects other messages, keys and garbage signatures', () => {
    const sig = signBytes(msg, signing.secretKey);
    expect(verifyBytes(msg, sig, signing.publicKey)).toBe(true);
    expect(verifyBytes(new TextEncoder().encode('hellp'), sig, signing.publicKey)).toBe(false);
    expect(verifyBytes(msg, sig, generatePartyKeys().signing.publicKey)).toBe(false);
    expect(verifyBytes(msg, 'not base64!', signing.publicKey)).toBe(false);
    expect(verifyBytes(msg, toBase64(new Uint8Array(63)), signing.publicKey)).toBe(false);
  });

  it('checks key lengths noble-style', () => {
    expect(() => signBytes(msg, signing.publicKey)).toThrow(
      'secretKey: expected Uint8Array of length 64, got length=32',
    );
    expect(() => verifyBytes(msg, '', signing.secretKey)).toThrow(
      'publicKey: expected Uint8Array of length 32, got length=64',
    );
  });

  it('keeps the keypair recoverable from the secret key', () => {
    expect(signingKeyPairFromSecretKey(signing.secretKey).publicKey).toEqual(signing.publicKey);
  });
});

describe('signJson / verifyJson', () => {
  const { signing } = generatePartyKeys();

  it('is independent of key order and rejects any change', () => {
    const sig = signJson({ a: 1, b: { c: [1, 2], d: 'x' } }, signing.secretKey);
    expect(verifyJson({ b: { d: 'x', c: [1, 2] }, a: 1 }, sig, signing.publicKey)).toBe(true);
    expect(verifyJson({ a: 1, b: { c: [2, 1], d: 'x' } }, sig, signing.publicKey)).toBe(false);
    expect(verifyJson({ a: 1, b: { c: [1, 2], d: 'x' }, e: null }, sig, signing.publicKey)).toBe(false);
  });

  it('verifies un-canonicalizable input as false instead of throwing', () => {
    const sig = signJson({ a: 1 }, signing.secretKey);
    expect(verifyJson({ a: NaN }, sig, signing.publicKey)).toBe(false);
  });

  it('signs prefix ‖ canonical JSON, so it verifies in OpenSSL over those exact bytes', () => {
    const value = { z: 1, a: 'b' };
    const sig = signJson(value, signing.secretKey);
    const bytes = Buffer.from(`${SIGNING_DOMAINS.json}{"a":"b","z":1}`, 'utf8');
    expect(Buffer.from(signedJsonBytes('json', value))).toEqual(bytes);
    expect(nodeVerify(null, bytes, edPublic(signing.publicKey), fromBase64(sig))).toBe(true);
  });

  it('uses distinct domain prefixes that all end in a newline', () => {
    const prefixes = Object.values(SIGNING_DOMAINS);
    expect(new Set(prefixes).size).toBe(prefixes.length);
    for (const p of prefixes) expect(p.endsWith('\n')).toBe(true);
  });
});

describe('keyId and fingerprint', () => {
  it('are stable, short and distinguish keys', () => {
    const a = generatePartyKeys();
    const b = generatePartyKeys();
    expect(keyId(a.signing.publicKey)).toMatch(/^[0-9a-f]{16}$/);
    expect(keyId(a.signing.publicKey)).toBe(keyId(Uint8Array.from(a.signing.publicKey)));
    expect(keyId(a.signing.publicKey)).not.toBe(keyId(b.signing.publicKey));
    const fp = fingerprint(a.signing.publicKey, a.box.publicKey);
    expect(fp).toMatch(/^[0-9a-f]{4}( [0-9a-f]{4}){15}$/);
    expect(fingerprint(a.signing.publicKey, b.box.publicKey)).not.toBe(fp);
    // Order of the two keys matters: swapping them is a different party.
    expect(fingerprint(a.box.publicKey, a.signing.publicKey)).not.toBe(fp);
  });

  it('known answer for an all-zero key', () => {
    // SHA-256 of 32 zero bytes.
    expect(keyId(new Uint8Array(32))).toBe('66687aadf862bd77');
  });
});

describe('chunkNonce layout', () => {
  it('is prefix ‖ u32be(index) ‖ u32be(count)', () => {
    const prefix = Uint8Array.from({ length: 16 }, (_, i) => i);
    expect(toHex(chunkNonce(prefix, 0x01020304, 0xa0b0c0d0))).toBe(
      '000102030405060708090a0b0c0d0e0f01020304a0b0c0d0',
    );
  });
});
