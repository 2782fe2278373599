import { createHash, type Hash } from 'node:crypto';

/**
 * Hashes via node:crypto (OpenSSL): ~20× faster than tweetnacl's SHA-512 on large
 * weight files (ENVIRONMENT-NOTES.md). Kept free of tweetnacl so the codec can use it.
 */

function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** SHA-256 of `bytes`, lower-case hex (64 chars). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(view(bytes)).digest('hex');
}

/** SHA-512 of `bytes`, lower-case hex (128 chars). */
export function sha512Hex(bytes: Uint8Array): string {
  return createHash('sha512').update(view(bytes)).digest('hex');
}

/** An incremental hash; `digestHex` may be called once. */
export interface IncrementalHash {
  update(bytes: Uint8Array): IncrementalHash;
  digestHex(): string;
}

function incremental(algorithm: 'sha256' | 'sha512'): IncrementalHash {
  const h: Hash = createHash(algorithm);
  const api: IncrementalHash = {
    update(bytes) {
      h.update(view(bytes));
      return api;
    },
    digestHex: () => h.digest('hex'),
  };
  return api;
}

/**
 * Incremental SHA-512, for hashing ciphertext chunk by chunk.
 * @example const h = createSha512(); for (const c of chunks) h.update(c); h.digestHex();
 */
export function createSha512(): IncrementalHash {
  return incremental('sha512');
}

/** Incremental SHA-256, for hashing weight files as they stream in. */
export function createSha256(): IncrementalHash {
  return incremental('sha256');
}
