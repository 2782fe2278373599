import nacl from 'tweetnacl';
import { bulkBackend } from './bulk-backend';

/**
 * The two primitives the update envelope uses for chunk data, kept behind this seam so a
 * faster byte-compatible XSalsa20-Poly1305 runs them: sodium-native when it loads, else
 * tweetnacl (see `bulk-backend.ts`). Internal: not exported from the index.
 */

/** secretbox overhead (Poly1305 tag) in bytes. */
export const CHUNK_TAG_BYTES = nacl.secretbox.overheadLength; // 16
export const CHUNK_KEY_BYTES = nacl.secretbox.keyLength; // 32
export const CHUNK_NONCE_BYTES = nacl.secretbox.nonceLength; // 24
export const NONCE_PREFIX_BYTES = 16;

/**
 * Nonce of chunk `index` of `count`: prefix(16) ‖ u32be(index) ‖ u32be(count). Binding
 * both index and count means a chunk decrypts only at its own position in an envelope of
 * its own length, so reordering, dropping, truncating or extending fails authentication.
 */
export function chunkNonce(prefix: Uint8Array, index: number, count: number): Uint8Array {
  const nonce = new Uint8Array(CHUNK_NONCE_BYTES);
  nonce.set(prefix, 0);
  const dv = new DataView(nonce.buffer);
  dv.setUint32(NONCE_PREFIX_BYTES, index, false);
  dv.setUint32(NONCE_PREFIX_BYTES + 4, count, false);
  return nonce;
}

/** Encrypt and authenticate one chunk (XSalsa20-Poly1305); output is 16 bytes longer. */
export function sealChunkData(plaintext: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array {
  return bulkBackend().seal(plaintext, nonce, key);
}

/** Open one chunk; `null` when authentication fails. */
export function openChunkData(ciphertext: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null {
  return bulkBackend().open(ciphertext, nonce, key);
}

/** Open one chunk into `out` (exactly 16 bytes shorter than the chunk); false when authentication fails. */
export function openChunkDataInto(
  ciphertext: Uint8Array,
  nonce: Uint8Array,
  key: Uint8Array,
  out: Uint8Array,
): boolean {
  return bulkBackend().openInto(ciphertext, nonce, key, out);
}
