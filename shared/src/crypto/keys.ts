import nacl from 'tweetnacl';
import { assertBytes, concatBytes, utf8 } from './bytes';
import { sha256Hex } from './hash';

/** A raw key pair as tweetnacl produces it. */
export interface KeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

/** The two key pairs every party (site or coordinator) holds. */
export interface PartyKeys {
  /** Ed25519: publicKey 32 bytes, secretKey 64 bytes (seed ‖ publicKey, tweetnacl layout). */
  signing: KeyPair;
  /** X25519: publicKey 32 bytes, secretKey 32 bytes. */
  box: KeyPair;
}

export const SIGNING_PUBLIC_KEY_BYTES = nacl.sign.publicKeyLength; // 32
export const SIGNING_SECRET_KEY_BYTES = nacl.sign.secretKeyLength; // 64
export const SIGNATURE_BYTES = nacl.sign.signatureLength; // 64
export const BOX_PUBLIC_KEY_BYTES = nacl.box.publicKeyLength; // 32
export const BOX_SECRET_KEY_BYTES = nacl.box.secretKeyLength; // 32

/** Fresh Ed25519 signing and X25519 box key pairs from the system CSPRNG. */
export function generatePartyKeys(): PartyKeys {
  return { signing: nacl.sign.keyPair(), box: nacl.box.keyPair() };
}

/** Rebuild an Ed25519 key pair from its 64-byte secret key (tweetnacl layout). */
export function signingKeyPairFromSecretKey(secretKey: Uint8Array): KeyPair {
  assertBytes(secretKey, SIGNING_SECRET_KEY_BYTES, 'signing secretKey');
  return nacl.sign.keyPair.fromSecretKey(secretKey);
}

/** Rebuild an X25519 key pair from its 32-byte secret key. */
export function boxKeyPairFromSecretKey(secretKey: Uint8Array): KeyPair {
  assertBytes(secretKey, BOX_SECRET_KEY_BYTES, 'box secretKey');
  return nacl.box.keyPair.fromSecretKey(secretKey);
}

/**
 * Short stable identifier of a signing key: the first 16 hex characters of SHA-256(publicKey).
 * For logs and lookups, not for trust decisions (use {@link fingerprint} for those).
 */
export function keyId(signingPublicKey: Uint8Array): string {
  assertBytes(signingPublicKey, SIGNING_PUBLIC_KEY_BYTES, 'signingPublicKey');
  return sha256Hex(signingPublicKey).slice(0, 16);
}

/**
 * Human-comparable fingerprint of a party's two public keys, which hospital IT and the
 * consortium admin read to each other out of band: SHA-256 over a domain tag and both
 * keys, as 16 groups of 4 hex characters ("a1b2 c3d4 …").
 */
export function fingerprint(signingPublicKey: Uint8Array, boxPublicKey: Uint8Array): string {
  assertBytes(signingPublicKey, SIGNING_PUBLIC_KEY_BYTES, 'signingPublicKey');
  assertBytes(boxPublicKey, BOX_PUBLIC_KEY_BYTES, 'boxPublicKey');
  const hex = sha256Hex(concatBytes(utf8('fedssl-fingerprint-v1\n'), signingPublicKey, boxPublicKey));
  return (hex.match(/.{4}/g) ?? []).join(' ');
}
