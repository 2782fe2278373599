import {
  createPrivateKey,
  createPublicKey,
  sign as nodeSign,
  verify as nodeVerify,
  type KeyObject,
} from 'node:crypto';
import nacl from 'tweetnacl';
import { FedsslError } from '../errors';

/**
 * Ed25519 detached signatures through node:crypto (OpenSSL, ~100× faster than tweetnacl
 * here), with tweetnacl as the reference and the fallback. Ed25519 is deterministic, so
 * both produce the same signature bytes for the same key and message (`ed25519.test.ts`
 * cross-checks them on random keys, messages and every bit flip).
 *
 * One deliberate rule on both paths: a signature whose scalar S is not reduced (S ≥ L, the
 * group order) is refused. OpenSSL refuses it; tweetnacl alone would accept S + L as a
 * second valid encoding of the same signature (malleability), so the fallback checks it.
 *
 * `FEDSSL_SIGNATURES=tweetnacl` forces the fallback (read once, at first use); `auto` (the
 * default) takes node:crypto when this runtime supports Ed25519 keys.
 */
export type SignatureBackendName = 'node-crypto' | 'tweetnacl';
export type SignatureBackendChoice = SignatureBackendName | 'auto';

/** Public KeyObjects remembered per raw key; bounded so arbitrary keys cannot grow it without end. */
const MAX_CACHED_PUBLIC_KEYS = 4096;
const publicKeys = new Map<string, KeyObject | null>();
/** Private KeyObjects per secret-key array, with the bytes they were built from (rebuilt if mutated). */
const privateKeys = new WeakMap<Uint8Array, { bytes: Uint8Array; key: KeyObject | null }>();

// DER prefix of an Ed25519 PKCS#8 private key (RFC 8410) before its 32-byte seed.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** L = 2^252 + 27742317777372353535851937790883648493, little-endian. */
const ORDER_L = Uint8Array.from([
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
]);

let chosen: SignatureBackendName | null = null;

function nodeSupportsEd25519(): boolean {
  try {
    const probe = nacl.sign.keyPair.fromSeed(new Uint8Array(32));
    const msg = new Uint8Array([1, 2, 3]);
    const sig = nacl.sign.detached(msg, probe.secretKey);
    const key = publicKeyObject(probe.publicKey);
    return key !== null && nodeVerify(null, msg, key, sig);
  } catch {
    return false;
  }
}

/**
 * Picks the signature implementation: `auto` takes node:crypto when it handles Ed25519, else
 * tweetnacl; naming one forces it (tests, `FEDSSL_SIGNATURES`). Returns the one in use.
 * @throws FedsslError CRYPTO_INVALID_ARGUMENT for node-crypto on a runtime without Ed25519.
 */
export function setSignatureBackend(choice: SignatureBackendChoice): SignatureBackendName {
  if (choice === 'tweetnacl') return (chosen = 'tweetnacl');
  const ok = nodeSupportsEd25519();
  if (choice === 'node-crypto' && !ok)
    throw new FedsslError('CRYPTO_INVALID_ARGUMENT', 'node:crypto does not support Ed25519 on this runtime');
  return (chosen = ok ? 'node-crypto' : 'tweetnacl');
}

/** The signature implementation in use (chosen at first use, see {@link setSignatureBackend}). */
export function signatureBackend(): SignatureBackendName {
  if (chosen === null)
    setSignatureBackend(process.env.FEDSSL_SIGNATURES === 'tweetnacl' ? 'tweetnacl' : 'auto');
  return chosen!;
}

/** The KeyObject of a raw 32-byte Ed25519 public key (cached), or null if OpenSSL refuses it. */
function publicKeyObject(publicKey: Uint8Array): KeyObject | null {
  const id = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64url');
  let key = publicKeys.get(id);
  if (key === undefined) {
    try {
      key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: id }, format: 'jwk' });
    } catch {
      key = null;
    }
    if (publicKeys.size >= MAX_CACHED_PUBLIC_KEYS) publicKeys.delete(publicKeys.keys().next().value!);
    publicKeys.set(id, key);
  }
  return key;
}

/**
 * The KeyObject of a 64-byte tweetnacl secret key (seed ‖ public key), cached per array and
 * rebuilt if its bytes changed; null when the stored public half is not the seed's own (a
 * malformed key: tweetnacl, which hashes the stored half, then signs, for the same bytes).
 */
function privateKeyObject(secretKey: Uint8Array): KeyObject | null {
  const hit = privateKeys.get(secretKey);
  if (hit && Buffer.compare(hit.bytes, secretKey) === 0) return hit.key;
  let key: KeyObject | null;
  try {
    const k = createPrivateKey({
      key: Buffer.concat([PKCS8_PREFIX, secretKey.subarray(0, 32)]),
      format: 'der',
      type: 'pkcs8',
    });
    const pub = createPublicKey(k).export({ format: 'jwk' }).x;
    const stored = Buffer.from(secretKey.buffer, secretKey.byteOffset + 32, 32).toString('base64url');
    key = pub === stored ? k : null;
  } catch {
    key = null;
  }
  privateKeys.set(secretKey, { bytes: Uint8Array.from(secretKey), key });
  return key;
}

/** True iff the scalar half S of a 64-byte signature is < L (its canonical encoding). */
export function hasCanonicalScalar(signature: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i]!;
    if (s !== ORDER_L[i]) return s < ORDER_L[i]!;
  }
  return false; // S = L
}

/** Ed25519 detached signature (64 bytes). Sizes are checked by the caller. */
export function ed25519Sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  const key = signatureBackend() === 'node-crypto' ? privateKeyObject(secretKey) : null;
  if (key === null) return nacl.sign.detached(message, secretKey);
  return new Uint8Array(nodeSign(null, message, key));
}

/** Ed25519 detached verification (S ≥ L refused on both paths). Sizes are checked by the caller. */
export function ed25519Verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  if (!hasCanonicalScalar(signature)) return false;
  const key = signatureBackend() === 'node-crypto' ? publicKeyObject(publicKey) : null;
  if (key === null) return nacl.sign.detached.verify(message, signature, publicKey);
  return nodeVerify(null, message, key, signature);
}
