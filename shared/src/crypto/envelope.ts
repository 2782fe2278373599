import nacl from 'tweetnacl';
import { FedsslError } from '../errors';
import {
  MAX_CHUNK_BYTES,
  PROTOCOL_VERSION,
  updateHeaderSchema,
  type UpdateHeader,
} from '../protocol/messages';
import { assertBytes, concatBytes, fromBase64, toBase64 } from './bytes';
import {
  CHUNK_KEY_BYTES,
  CHUNK_TAG_BYTES,
  NONCE_PREFIX_BYTES,
  chunkNonce,
  openChunkData,
  openChunkDataInto,
  sealChunkData,
} from './chunk-cipher';
import { createSha512, type IncrementalHash } from './hash';
import {
  BOX_PUBLIC_KEY_BYTES,
  BOX_SECRET_KEY_BYTES,
  SIGNING_PUBLIC_KEY_BYTES,
  SIGNING_SECRET_KEY_BYTES,
} from './keys';
import { signDomainJson, verifyDomainJson } from './sign';

/**
 * The update envelope (ARCHITECTURE.md §4): a site's encoded weight delta, encrypted chunk
 * by chunk under a fresh content key, the key sealed to the coordinator's X25519 key, and
 * a header signed with the site's Ed25519 key.
 */

/** Header fields that {@link sealUpdate} fills in; the caller supplies all the others. */
export type UpdateEnvelopeField =
  | 'chunkCount'
  | 'chunkSize'
  | 'plaintextBytes'
  | 'noncePrefix'
  | 'ephemeralPublicKey'
  | 'keyBoxNonce'
  | 'keyBox'
  | 'ciphertextSha512';

/** What the site states about its update: everything in the header but the envelope fields. */
export type UpdateHeaderFields = Omit<UpdateHeader, UpdateEnvelopeField>;

export interface SealUpdateArgs {
  /** The encoded update (e.g. `encodeWeights(delta)`). */
  plaintext: Uint8Array;
  fields: UpdateHeaderFields;
  /** Plaintext bytes per chunk, 1..MAX_CHUNK_BYTES; each ciphertext chunk is 16 bytes longer. */
  chunkSize: number;
  /** The site's Ed25519 secret key (64 bytes). */
  siteSigningSecretKey: Uint8Array;
  /** The coordinator's X25519 public key (32 bytes), pinned at enrollment. */
  coordinatorBoxPublicKey: Uint8Array;
}

export interface SealedUpdate {
  header: UpdateHeader;
  /** Ed25519 signature (base64) over "fedssl-update-v1\n" ‖ canonicalJson(header). */
  signature: string;
  /** Ciphertext chunks in order; `header.chunkCount` of them. */
  chunks: Uint8Array[];
}

export interface OpenUpdateArgs {
  header: UpdateHeader;
  signature: string;
  chunks: Uint8Array[];
  siteSigningPublicKey: Uint8Array;
  coordinatorBoxSecretKey: Uint8Array;
}

/** Largest chunk count the nonce's u32 fields can express. */
const MAX_CHUNK_COUNT = 0xffff_ffff;

const CHUNK_AUTH_FAILED = 'update chunk failed authentication';

/** Number of chunks for `plaintextBytes` at `chunkSize`; an empty plaintext is one empty chunk. */
export function expectedChunkCount(plaintextBytes: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(plaintextBytes / chunkSize));
}

function checkChunkSize(chunkSize: number): void {
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_BYTES) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `chunkSize: expected an integer in 1..${MAX_CHUNK_BYTES}, got ${String(chunkSize)}`,
    );
  }
}

/**
 * Schema-check a header and its internal consistency (count matches size, base64 fields
 * canonical). Returns the parsed header.
 * @throws FedsslError ENVELOPE_HEADER_INVALID naming the first problems.
 */
export function parseUpdateHeader(header: unknown): UpdateHeader {
  const parsed = updateHeaderSchema.safeParse(header);
  if (!parsed.success) {
    const what = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    throw new FedsslError('ENVELOPE_HEADER_INVALID', `update header does not match the schema: ${what}`);
  }
  const h = parsed.data;
  const expected = expectedChunkCount(h.plaintextBytes, h.chunkSize);
  if (h.chunkCount !== expected || h.chunkCount > MAX_CHUNK_COUNT) {
    throw new FedsslError(
      'ENVELOPE_HEADER_INVALID',
      `update header chunkCount ${h.chunkCount} does not fit plaintextBytes ${h.plaintextBytes} at chunkSize ${h.chunkSize} (expected ${expected})`,
    );
  }
  try {
    fromBase64(h.noncePrefix, NONCE_PREFIX_BYTES);
    fromBase64(h.ephemeralPublicKey, BOX_PUBLIC_KEY_BYTES);
    fromBase64(h.keyBoxNonce, nacl.box.nonceLength);
    fromBase64(h.keyBox, CHUNK_KEY_BYTES + nacl.box.overheadLength);
    fromBase64(h.taskNonce, 32);
  } catch (e) {
    throw new FedsslError(
      'ENVELOPE_HEADER_INVALID',
      `update header has a malformed binary field: ${(e as Error).message}`,
    );
  }
  return h;
}

/**
 * Encrypt and sign an update for the coordinator. The content key and the ephemeral
 * secret key are wiped before returning.
 * @throws FedsslError CRYPTO_INVALID_ARGUMENT for bad keys/chunkSize; ENVELOPE_HEADER_INVALID
 *   if `fields` do not make a valid header.
 * @example
 * const { header, signature, chunks } = sealUpdate({ plaintext: encodeWeights(delta), fields,
 *   chunkSize: 1 << 20, siteSigningSecretKey: keys.signing.secretKey, coordinatorBoxPublicKey });
 */
export function sealUpdate(args: SealUpdateArgs): SealedUpdate {
  const { plaintext, fields, chunkSize, siteSigningSecretKey, coordinatorBoxPublicKey } = args;
  assertBytes(plaintext, undefined, 'plaintext');
  assertBytes(siteSigningSecretKey, SIGNING_SECRET_KEY_BYTES, 'siteSigningSecretKey');
  assertBytes(coordinatorBoxPublicKey, BOX_PUBLIC_KEY_BYTES, 'coordinatorBoxPublicKey');
  checkChunkSize(chunkSize);
  const count = expectedChunkCount(plaintext.length, chunkSize);
  if (count > MAX_CHUNK_COUNT) {
    throw new FedsslError(
      'CRYPTO_INVALID_ARGUMENT',
      `plaintext needs ${count} chunks, more than ${MAX_CHUNK_COUNT}`,
    );
  }

  const contentKey = nacl.randomBytes(CHUNK_KEY_BYTES);
  const ephemeral = nacl.box.keyPair();
  try {
    const noncePrefix = nacl.randomBytes(NONCE_PREFIX_BYTES);
    const hash = createSha512();
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const piece = plaintext.subarray(i * chunkSize, Math.min(plaintext.length, (i + 1) * chunkSize));
      const ct = sealChunkData(piece, chunkNonce(noncePrefix, i, count), contentKey);
      hash.update(ct);
      chunks.push(ct);
    }
    const keyBoxNonce = nacl.randomBytes(nacl.box.nonceLength);
    const keyBox = nacl.box(contentKey, keyBoxNonce, coordinatorBoxPublicKey, ephemeral.secretKey);

    const candidate: UpdateHeader = {
      ...fields,
      chunkCount: count,
      chunkSize,
      plaintextBytes: plaintext.length,
      noncePrefix: toBase64(noncePrefix),
      ephemeralPublicKey: toBase64(ephemeral.publicKey),
      keyBoxNonce: toBase64(keyBoxNonce),
      keyBox: toBase64(keyBox),
      ciphertextSha512: hash.digestHex(),
    };
    const header = parseUpdateHeader(candidate);
    const signature = signDomainJson('update', header, siteSigningSecretKey);
    return { header, signature, chunks };
  } finally {
    contentKey.fill(0);
    ephemeral.secretKey.fill(0);
  }
}

/**
 * Check an update header's shape and the site's signature over it, and that it speaks this
 * protocol version. Call before accepting any chunk of the upload.
 * @throws FedsslError ENVELOPE_HEADER_INVALID, ENVELOPE_SIGNATURE_INVALID, PROTOCOL_VERSION_MISMATCH.
 */
export function verifyUpdateHeader(
  header: UpdateHeader,
  signature: string,
  siteSigningPublicKey: Uint8Array,
): void {
  assertBytes(siteSigningPublicKey, SIGNING_PUBLIC_KEY_BYTES, 'siteSigningPublicKey');
  parseUpdateHeader(header);
  if (typeof signature !== 'string' || !verifyDomainJson('update', header, signature, siteSigningPublicKey)) {
    throw new FedsslError(
      'ENVELOPE_SIGNATURE_INVALID',
      'update header signature does not verify against the site key',
    );
  }
  if (header.protocolVersion !== PROTOCOL_VERSION) {
    throw new FedsslError(
      'PROTOCOL_VERSION_MISMATCH',
      `update header is protocol version ${header.protocolVersion}, this build speaks ${PROTOCOL_VERSION}`,
    );
  }
}

/**
 * Streaming decryption of one update: chunks are opened one at a time, in order, so memory
 * is bounded by the chunk size. It does not check the header signature: call
 * {@link verifyUpdateHeader} first (or use {@link openUpdate}).
 *
 * Any authentication failure wipes the key and poisons the opener.
 */
export class UpdateOpener {
  readonly header: UpdateHeader;
  private key: Uint8Array | null;
  private readonly noncePrefix: Uint8Array;
  private readonly hash: IncrementalHash = createSha512();
  private next = 0;
  private failure: FedsslError | null = null;
  private finished = false;

  /**
   * Opens the key box with the coordinator's X25519 secret key.
   * @throws FedsslError ENVELOPE_HEADER_INVALID; ENVELOPE_KEY_UNSEALABLE if the key box does
   *   not open (wrong coordinator key or tampered box).
   */
  constructor(header: UpdateHeader, coordinatorBoxSecretKey: Uint8Array) {
    assertBytes(coordinatorBoxSecretKey, BOX_SECRET_KEY_BYTES, 'coordinatorBoxSecretKey');
    this.header = parseUpdateHeader(header);
    this.noncePrefix = fromBase64(this.header.noncePrefix, NONCE_PREFIX_BYTES);
    const key = nacl.box.open(
      fromBase64(this.header.keyBox),
      fromBase64(this.header.keyBoxNonce),
      fromBase64(this.header.ephemeralPublicKey),
      coordinatorBoxSecretKey,
    );
    if (key === null || key.length !== CHUNK_KEY_BYTES) {
      throw new FedsslError(
        'ENVELOPE_KEY_UNSEALABLE',
        'update content key cannot be unsealed with this coordinator key',
      );
    }
    this.key = key;
  }

  /** Index the next {@link openChunk} call must pass. */
  get nextIndex(): number {
    return this.next;
  }

  /** Plaintext length chunk `index` must decrypt to. */
  private plainLength(index: number): number {
    const { chunkCount, chunkSize, plaintextBytes } = this.header;
    return index < chunkCount - 1 ? chunkSize : plaintextBytes - (chunkCount - 1) * chunkSize;
  }

  private fail(error: FedsslError): never {
    this.failure = error;
    this.dispose();
    throw error;
  }

  /**
   * Decrypt chunk `index` (0..chunkCount-1, strictly in order) and return its plaintext.
   * @throws FedsslError ENVELOPE_CHUNK_COUNT for an out-of-order, repeated or extra index;
   *   ENVELOPE_CHUNK_INVALID if the chunk does not authenticate at this position.
   */
  openChunk(index: number, ciphertext: Uint8Array): Uint8Array {
    const key = this.checkNext(index, ciphertext);
    // Length is checked first only to avoid work; the message is the same as a MAC failure.
    const plain =
      ciphertext.length === this.plainLength(index) + CHUNK_TAG_BYTES
        ? openChunkData(ciphertext, chunkNonce(this.noncePrefix, index, this.header.chunkCount), key)
        : null;
    if (plain === null) this.fail(new FedsslError('ENVELOPE_CHUNK_INVALID', CHUNK_AUTH_FAILED, { index }));
    this.accept(ciphertext);
    return plain;
  }

  /**
   * {@link openChunk} writing the plaintext into `out` (the chunk's place in a buffer the
   * caller owns), so a whole update is decrypted without a copy per chunk. On failure `out`
   * may hold nothing useful and the opener is poisoned, as with {@link openChunk}.
   * @throws FedsslError as {@link openChunk}; CRYPTO_INVALID_ARGUMENT if `out` is not
   *   exactly this chunk's plaintext length.
   */
  openChunkInto(index: number, ciphertext: Uint8Array, out: Uint8Array): void {
    const key = this.checkNext(index, ciphertext);
    const expected = this.plainLength(index);
    if (out.length !== expected) {
      throw new FedsslError(
        'CRYPTO_INVALID_ARGUMENT',
        `out: expected ${expected} bytes for chunk ${index}, got ${out.length}`,
      );
    }
    const ok =
      ciphertext.length === expected + CHUNK_TAG_BYTES &&
      openChunkDataInto(ciphertext, chunkNonce(this.noncePrefix, index, this.header.chunkCount), key, out);
    if (!ok) this.fail(new FedsslError('ENVELOPE_CHUNK_INVALID', CHUNK_AUTH_FAILED, { index }));
    this.accept(ciphertext);
  }

  /** Order and state checks shared by both open calls; returns the content key. */
  private checkNext(index: number, ciphertext: Uint8Array): Uint8Array {
    if (this.failure) throw this.failure;
    const count = this.header.chunkCount;
    if (!Number.isSafeInteger(index) || index < 0 || index >= count || this.finished) {
      throw new FedsslError(
        'ENVELOPE_CHUNK_COUNT',
        `chunk index ${String(index)} is outside 0..${count - 1}`,
        {
          index,
          chunkCount: count,
        },
      );
    }
    if (index !== this.next) {
      throw new FedsslError('ENVELOPE_CHUNK_COUNT', `expected chunk ${this.next}, got chunk ${index}`, {
        index,
        expected: this.next,
      });
    }
    assertBytes(ciphertext, undefined, 'ciphertext');
    if (this.key === null)
      throw new FedsslError('CRYPTO_INVALID_ARGUMENT', 'UpdateOpener used after dispose()');
    return this.key;
  }

  private accept(ciphertext: Uint8Array): void {
    this.hash.update(ciphertext);
    this.next++;
  }

  /**
   * Confirm every chunk arrived and the ciphertext hash matches the signed header, then
   * wipe the key.
   * @throws FedsslError ENVELOPE_CHUNK_COUNT if chunks are missing; ENVELOPE_HASH_MISMATCH.
   */
  finish(): void {
    if (this.failure) throw this.failure;
    const count = this.header.chunkCount;
    if (this.next !== count) {
      throw new FedsslError(
        'ENVELOPE_CHUNK_COUNT',
        `update incomplete: received ${this.next} of ${count} chunks`,
        {
          received: this.next,
          chunkCount: count,
        },
      );
    }
    if (this.finished) return;
    if (this.hash.digestHex() !== this.header.ciphertextSha512) {
      this.fail(
        new FedsslError(
          'ENVELOPE_HASH_MISMATCH',
          'update ciphertext SHA-512 does not match the signed header',
        ),
      );
    }
    this.finished = true;
    this.dispose();
  }

  /** Wipe the content key. Safe to call more than once. */
  dispose(): void {
    this.key?.fill(0);
    this.key = null;
  }
}

/**
 * True iff the header's content key box opens with `coordinatorBoxSecretKey`: tells which of
 * the coordinator's box keys (current, or one still in its grace period) an update was
 * sealed to. The unsealed key is wiped at once.
 */
export function keyBoxOpensWith(header: UpdateHeader, coordinatorBoxSecretKey: Uint8Array): boolean {
  assertBytes(coordinatorBoxSecretKey, BOX_SECRET_KEY_BYTES, 'coordinatorBoxSecretKey');
  let key: Uint8Array | null;
  try {
    key = nacl.box.open(
      fromBase64(header.keyBox),
      fromBase64(header.keyBoxNonce),
      fromBase64(header.ephemeralPublicKey),
      coordinatorBoxSecretKey,
    );
  } catch {
    return false;
  }
  if (key === null) return false;
  key.fill(0);
  return true;
}

/**
 * True iff `signature` is the site's signature over the header under `siteSigningPublicKey`
 * (no other check): picks which of a site's keys signed before {@link verifyUpdateHeader}.
 */
export function updateHeaderSignedBy(
  header: UpdateHeader,
  signature: string,
  siteSigningPublicKey: Uint8Array,
): boolean {
  return typeof signature === 'string' && verifyDomainJson('update', header, signature, siteSigningPublicKey);
}

/**
 * Verify, decrypt and reassemble a whole update held in memory.
 * @throws FedsslError as {@link verifyUpdateHeader} and {@link UpdateOpener}.
 */
export function openUpdate(args: OpenUpdateArgs): Uint8Array {
  const { header, signature, chunks, siteSigningPublicKey, coordinatorBoxSecretKey } = args;
  verifyUpdateHeader(header, signature, siteSigningPublicKey);
  const opener = new UpdateOpener(header, coordinatorBoxSecretKey);
  try {
    const parts: Uint8Array[] = [];
    chunks.forEach((c, i) => parts.push(opener.openChunk(i, c)));
    opener.finish();
    // Assembled only after finish(): the size comes from data that authenticated, not from
    // the (signed but site-chosen) plaintextBytes.
    return concatBytes(...parts);
  } finally {
    opener.dispose();
  }
}
