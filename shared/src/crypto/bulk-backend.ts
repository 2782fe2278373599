import nacl from 'tweetnacl';
import { FedsslError } from '../errors';

/**
 * Which XSalsa20-Poly1305 implementation encrypts update chunks. tweetnacl stays the
 * reference (and does keys, signatures and the key box); for bulk chunk data the native
 * libsodium binding (optional dependency `sodium-native`) is ~18× faster here and produces
 * byte-identical output (`bulk-backend.test.ts` cross-checks the two). It is loaded lazily
 * so that a missing or broken native build falls back to tweetnacl instead of failing.
 *
 * `FEDSSL_BULK_CRYPTO=tweetnacl` forces the fallback (read once, at first use); `auto`
 * (the default) takes sodium-native when it loads.
 */

export type BulkBackendName = 'sodium-native' | 'tweetnacl';
export type BulkBackendChoice = BulkBackendName | 'auto';

export interface BulkBackend {
  readonly name: BulkBackendName;
  /** secretbox: ciphertext is `plaintext.length + 16` bytes (tag first, as in NaCl). */
  seal(plaintext: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array;
  /** secretbox.open: the plaintext, or `null` when authentication fails. */
  open(ciphertext: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null;
  /**
   * secretbox.open into `out` (exactly `ciphertext.length − 16` bytes), saving a copy on
   * the ingest path. False when authentication fails; `out` is then left unchanged.
   */
  openInto(ciphertext: Uint8Array, nonce: Uint8Array, key: Uint8Array, out: Uint8Array): boolean;
}

/** The part of sodium-native's API used here (the package ships no types). */
interface SodiumSecretbox {
  crypto_secretbox_MACBYTES: number;
  crypto_secretbox_easy(c: Uint8Array, m: Uint8Array, n: Uint8Array, k: Uint8Array): void;
  crypto_secretbox_open_easy(m: Uint8Array, c: Uint8Array, n: Uint8Array, k: Uint8Array): boolean;
}

const TAG = nacl.secretbox.overheadLength;

export const tweetnaclBulk: BulkBackend = {
  name: 'tweetnacl',
  seal: (m, n, k) => nacl.secretbox(m, n, k),
  open: (c, n, k) => nacl.secretbox.open(c, n, k),
  openInto(c, n, k, out) {
    if (c.length < TAG) return false;
    checkOut(c, out);
    const m = nacl.secretbox.open(c, n, k);
    if (m === null) return false;
    out.set(m);
    return true;
  },
};

function checkOut(ciphertext: Uint8Array, out: Uint8Array): void {
  if (out.length !== ciphertext.length - TAG) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `secretbox: expected an output of ${ciphertext.length - TAG} bytes, got ${out.length}`,
    );
  }
}

// tweetnacl checks key and nonce sizes itself; libsodium would read past short buffers,
// so the native path checks them here with the same outcome (a thrown error).
function checkSizes(nonce: Uint8Array, key: Uint8Array): void {
  if (nonce.length !== nacl.secretbox.nonceLength || key.length !== nacl.secretbox.keyLength) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `secretbox: expected a 24-byte nonce and a 32-byte key, got ${nonce.length} and ${key.length}`,
    );
  }
}

function sodiumBulk(sodium: SodiumSecretbox): BulkBackend {
  return {
    name: 'sodium-native',
    seal(m, n, k) {
      checkSizes(n, k);
      const c = new Uint8Array(m.length + TAG);
      sodium.crypto_secretbox_easy(c, m, n, k);
      return c;
    },
    open(c, n, k) {
      checkSizes(n, k);
      if (c.length < TAG) return null;
      const m = new Uint8Array(c.length - TAG);
      return sodium.crypto_secretbox_open_easy(m, c, n, k) ? m : null;
    },
    openInto(c, n, k, out) {
      checkSizes(n, k);
      if (c.length < TAG) return false;
      checkOut(c, out);
      return sodium.crypto_secretbox_open_easy(out, c, n, k);
    },
  };
}

let native: BulkBackend | null | undefined;

// eslint-disable-next-line @typescript-eslint/no-require-imports
const requireSodium = (): unknown => require('sodium-native');

/**
 * sodium-native's secretbox, or null when the package (or its prebuilt binary) is absent.
 * `load` is injectable so tests can simulate a machine without it.
 */
export function loadNativeBulk(load: () => unknown = requireSodium): BulkBackend | null {
  if (load !== requireSodium) return tryLoad(load);
  native ??= tryLoad(load);
  return native;
}

function tryLoad(load: () => unknown): BulkBackend | null {
  try {
    // A load failure means "not installed here", never an error.
    const sodium = load() as SodiumSecretbox;
    return sodium.crypto_secretbox_MACBYTES === TAG ? sodiumBulk(sodium) : null;
  } catch {
    return null;
  }
}

function envChoice(): BulkBackendChoice {
  const v = process.env.FEDSSL_BULK_CRYPTO;
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (v === 'tweetnacl' || v === 'sodium-native') return v;
  throw new FedsslError(
    'CRYPTO_INVALID_ARGUMENT',
    `FEDSSL_BULK_CRYPTO: expected auto, sodium-native or tweetnacl, got "${v.slice(0, 32)}"`,
  );
}

/**
 * The backend for a choice: `auto` prefers sodium-native; asking for sodium-native when it
 * cannot load is an error (a benchmark or operator asked for something that is not there).
 */
export function resolveBulkBackend(choice: BulkBackendChoice, load?: () => unknown): BulkBackend {
  if (choice === 'tweetnacl') return tweetnaclBulk;
  const n = loadNativeBulk(load);
  if (n) return n;
  if (choice === 'sodium-native') {
    throw new FedsslError('CRYPTO_INVALID_ARGUMENT', 'sodium-native was requested but does not load here');
  }
  return tweetnaclBulk;
}

let current: BulkBackend | undefined;

/** The backend chunk encryption uses now (chosen from FEDSSL_BULK_CRYPTO on first call). */
export function bulkBackend(): BulkBackend {
  current ??= resolveBulkBackend(envChoice());
  return current;
}

/**
 * Switch the chunk cipher implementation for this process (tests, benchmarks).
 * @returns the name of the backend now in use.
 * @example setBulkBackend('tweetnacl'); // force the pure-JS fallback
 */
export function setBulkBackend(choice: BulkBackendChoice): BulkBackendName {
  current = resolveBulkBackend(choice);
  return current.name;
}
