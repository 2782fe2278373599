import { FedsslError } from '../errors';

/**
 * Byte helpers with noble-style argument checks. Every public crypto function runs its
 * inputs through these so a wrong key or nonce fails loudly with the length it got,
 * instead of tweetnacl's terse "bad key size".
 */

/**
 * Throws CRYPTO_INVALID_ARGUMENT unless `value` is a Uint8Array (of `length` bytes if given).
 * @example assertBytes(key, 32, 'secretKey')
 */
export function assertBytes(value: unknown, length?: number, name = 'value'): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    const type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `${name}: expected Uint8Array${length === undefined ? '' : ` of length ${length}`}, got type=${type}`,
    );
  }
  if (length !== undefined && value.length !== length) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `${name}: expected Uint8Array of length ${length}, got length=${value.length}`,
    );
  }
}

/** Standard (padded) base64 of `bytes`. */
export function toBase64(bytes: Uint8Array): string {
  assertBytes(bytes, undefined, 'toBase64');
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Strict base64 decode: only the canonical padded encoding is accepted (Node's decoder
 * silently skips junk and ignores non-zero trailing bits, which would let two different
 * strings stand for the same key or signature).
 * @throws FedsslError CRYPTO_INVALID_ARGUMENT "expected base64 of N bytes, got M"
 */
export function fromBase64(s: string, expectedLength?: number): Uint8Array {
  if (typeof s !== 'string' || !BASE64_RE.test(s)) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `expected base64${expectedLength === undefined ? '' : ` of ${expectedLength} bytes`}, got a string that is not canonical base64`,
    );
  }
  const buf = Buffer.from(s, 'base64');
  if (buf.toString('base64') !== s) {
    throw new FedsslError('CRYPTO_INVALID_ARGUMENT', 'expected canonical base64, got non-zero padding bits');
  }
  if (expectedLength !== undefined && buf.length !== expectedLength) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `expected base64 of ${expectedLength} bytes, got ${buf.length}`,
    );
  }
  // Copy into a fresh, exactly-sized Uint8Array: Buffer may be a view into a shared pool.
  return new Uint8Array(buf);
}

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Concatenate byte arrays into one new array. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Constant-time equality of two byte arrays (false when lengths differ). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** UTF-8 encode. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
