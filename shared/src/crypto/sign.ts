import { FedsslError } from '../errors';
import { assertBytes, concatBytes, fromBase64, toBase64, utf8 } from './bytes';
import { canonicalJson } from './canonical-json';
import { ed25519Sign, ed25519Verify } from './ed25519';
import { SIGNATURE_BYTES, SIGNING_PUBLIC_KEY_BYTES, SIGNING_SECRET_KEY_BYTES } from './keys';

/**
 * Domain prefixes: every signed document kind gets its own, so a signature made for one
 * kind never verifies as another. Each ends in "\n" and canonical JSON never contains a raw
 * newline, so no prefix+document can be read as a different prefix+document.
 */
export const SIGNING_DOMAINS = {
  json: 'fedssl-json-v1\n',
  task: 'fedssl-task-v1\n',
  manifest: 'fedssl-manifest-v1\n',
  update: 'fedssl-update-v1\n',
  siteKeyRotation: 'fedssl-site-key-rotation-v1\n',
  coordinatorKeyAnnouncement: 'fedssl-coordinator-key-announcement-v1\n',
} as const;
export type SigningDomain = keyof typeof SIGNING_DOMAINS;

/** Ed25519 detached signature of `bytes`, base64 (64 bytes; node:crypto, tweetnacl as the fallback). */
export function signBytes(bytes: Uint8Array, secretKey: Uint8Array): string {
  assertBytes(bytes, undefined, 'bytes');
  assertBytes(secretKey, SIGNING_SECRET_KEY_BYTES, 'secretKey');
  return toBase64(ed25519Sign(bytes, secretKey));
}

/**
 * True iff `sigB64` is a valid Ed25519 signature of `bytes` under `publicKey` (node:crypto,
 * tweetnacl as the fallback; a non-reduced scalar S ≥ L is not valid, see `ed25519.ts`).
 * A malformed signature string is simply not valid (false); a malformed key or message
 * is a programming error and throws CRYPTO_INVALID_ARGUMENT.
 */
export function verifyBytes(bytes: Uint8Array, sigB64: string, publicKey: Uint8Array): boolean {
  assertBytes(bytes, undefined, 'bytes');
  assertBytes(publicKey, SIGNING_PUBLIC_KEY_BYTES, 'publicKey');
  let sig: Uint8Array;
  try {
    sig = fromBase64(sigB64, SIGNATURE_BYTES);
  } catch {
    return false;
  }
  return ed25519Verify(bytes, sig, publicKey);
}

/** The exact bytes signed for `value` in `domain`: prefix ‖ canonical JSON, UTF-8. */
export function signedJsonBytes(domain: SigningDomain, value: unknown): Uint8Array {
  return concatBytes(utf8(SIGNING_DOMAINS[domain]), utf8(canonicalJson(value)));
}

/** Sign `value`'s canonical JSON in a document domain (internal to shared/crypto). */
export function signDomainJson(domain: SigningDomain, value: unknown, secretKey: Uint8Array): string {
  return signBytes(signedJsonBytes(domain, value), secretKey);
}

/**
 * Verify a domain-separated JSON signature. Values that cannot be canonicalized (they
 * came off the wire, so this means tampering) verify as false instead of throwing.
 */
export function verifyDomainJson(
  domain: SigningDomain,
  value: unknown,
  sigB64: string,
  publicKey: Uint8Array,
): boolean {
  assertBytes(publicKey, SIGNING_PUBLIC_KEY_BYTES, 'publicKey');
  let bytes: Uint8Array;
  try {
    bytes = signedJsonBytes(domain, value);
  } catch (e) {
    if (e instanceof FedsslError) return false;
    throw e;
  }
  return verifyBytes(bytes, sigB64, publicKey);
}

/**
 * Sign any JSON value (canonical form, "fedssl-json-v1\n" domain). For ad-hoc documents;
 * tasks, manifests and update headers have their own functions and domains.
 * @example const sig = signJson({ a: 1 }, keys.signing.secretKey);
 */
export function signJson(value: unknown, secretKey: Uint8Array): string {
  return signDomainJson('json', value, secretKey);
}

/** Verify a {@link signJson} signature; key order in `value` does not matter. */
export function verifyJson(value: unknown, sigB64: string, publicKey: Uint8Array): boolean {
  return verifyDomainJson('json', value, sigB64, publicKey);
}
