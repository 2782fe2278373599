import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import nacl from 'tweetnacl';
import fc from 'fast-check';
import { isFedsslError, type ErrorCode } from '../errors';
import { MAX_CHUNK_BYTES, PROTOCOL_VERSION, updateHeaderSchema } from '../protocol/messages';
import { toBase64 } from './bytes';
import { sha256Hex } from './hash';
import { generatePartyKeys } from './keys';
import { signDomainJson } from './sign';
import {
  UpdateOpener,
  expectedChunkCount,
  openUpdate,
  sealUpdate,
  verifyUpdateHeader,
  type SealedUpdate,
  type UpdateHeaderFields,
} from './envelope';

const site = generatePartyKeys();
const coordinator = generatePartyKeys();
const CHUNK = 1000;

function fields(over: Partial<UpdateHeaderFields> = {}): UpdateHeaderFields {
  return {
    protocolVersion: PROTOCOL_VERSION,
    siteId: 'site-a',
    runId: 'run-1',
    round: 2,
    taskId: 'task-7',
    taskNonce: toBase64(new Uint8Array(32).fill(9)),
    baseModelHash: sha256Hex(new Uint8Array([1, 2, 3])),
    exampleCount: 128,
    metrics: { loss: 0.25, steps: 10 },
    createdAt: '2025-01-01T00:00:00.000Z',
    ...over,
  };
}

function seal(
  plaintext: Uint8Array,
  chunkSize = CHUNK,
  over: Partial<UpdateHeaderFields> = {},
): SealedUpdate {
  return sealUpdate({
    plaintext,
    fields: fields(over),
    chunkSize,
    siteSigningSecretKey: site.signing.secretKey,
    coordinatorBoxPublicKey: coordinator.box.publicKey,
  });
}

function open(s: SealedUpdate, chunks = s.chunks): Uint8Array {
  return openUpdate({
    header: s.header,
    signature: s.signature,
    chunks,
    siteSigningPublicKey: site.signing.publicKey,
    coordinatorBoxSecretKey: coordinator.box.secretKey,
  });
}

function codeOf(fn: () => unknown): ErrorCode | 'no error' | 'not a FedsslError' {
  try {
    fn();
    return 'no error';
  } catch (e) {
    return isFedsslError(e) ? e.code : 'not a FedsslError';
  }
}

describe('sealUpdate / openUpdate round trip', () => {
  it.each([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3.5 * CHUNK])('%i bytes', (n) => {
    const plaintext = new Uint8Array(randomBytes(n));
    const s = seal(plaintext);
    expect(s.header.chunkCount).toBe(expectedChunkCount(n, CHUNK));
    expect(s.chunks).toHaveLength(s.header.chunkCount);
    expect(s.header.plaintextBytes).toBe(n);
    expect(updateHeaderSchema.parse(s.header)).toEqual(s.header);
    expect(open(s)).toEqual(plaintext);
  });

  it('an empty plaintext is one empty chunk', () => {
    const s = seal(new Uint8Array(0));
    expect(s.chunks).toHaveLength(1);
    expect(s.chunks[0]).toHaveLength(16);
  });

  it('round-trips random sizes and chunk sizes, also after JSON transport of the header', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2000 }),
        fc.integer({ min: 40, max: 700 }),
        (plaintext, chunkSize) => {
          const s = seal(plaintext, chunkSize);
          const header = JSON.parse(JSON.stringify(s.header)) as typeof s.header;
          expect(open({ ...s, header })).toEqual(plaintext);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('uses fresh keys and nonces every time', () => {
    const p = new Uint8Array(100);
    const a = seal(p);
    const b = seal(p);
    expect(a.header.keyBox).not.toBe(b.header.keyBox);
    expect(a.header.noncePrefix).not.toBe(b.header.noncePrefix);
    expect(a.header.ephemeralPublicKey).not.toBe(b.header.ephemeralPublicKey);
    expect(Buffer.from(a.chunks[0] ?? [])).not.toEqual(Buffer.from(b.chunks[0] ?? []));
  });

  it('streams through UpdateOpener chunk by chunk', () => {
    const plaintext = new Uint8Array(randomBytes(3500));
    const s = seal(plaintext);
    verifyUpdateHeader(s.header, s.signature, site.signing.publicKey);
    const opener = new UpdateOpener(s.header, coordinator.box.secretKey);
    const out: number[] = [];
    s.chunks.forEach((c, i) => {
      expect(opener.nextIndex).toBe(i);
      out.push(...opener.openChunk(i, c));
    });
    opener.finish();
    expect(Uint8Array.from(out)).toEqual(plaintext);
    // After finish the key is gone and nothing more is accepted.
    expect(codeOf(() => opener.openChunk(4, s.chunks[0] ?? new Uint8Array()))).toBe('ENVELOPE_CHUNK_COUNT');
  });
});

describe('argument checks', () => {
  it('rejects bad keys and chunk sizes with noble-style messages', () => {
    const base = {
      plaintext: new Uint8Array(1),
      fields: fields(),
      chunkSize: 10,
      siteSigningSecretKey: site.signing.secretKey,
      coordinatorBoxPublicKey: coordinator.box.publicKey,
    };
    expect(() => sealUpdate({ ...base, siteSigningSecretKey: site.signing.publicKey })).toThrow(
      'siteSigningSecretKey: expected Uint8Array of length 64, got length=32',
    );
    expect(() => sealUpdate({ ...base, coordinatorBoxPublicKey: new Uint8Array(31) })).toThrow(
      'coordinatorBoxPublicKey: expected Uint8Array of length 32, got length=31',
    );
    expect(() => sealUpdate({ ...base, chunkSize: 0 })).toThrow(
      `chunkSize: expected an integer in 1..${MAX_CHUNK_BYTES}, got 0`,
    );
    expect(() => sealUpdate({ ...base, chunkSize: MAX_CHUNK_BYTES + 1 })).toThrow('chunkSize');
    expect(
      () => new UpdateOpener(seal(new Uint8Array(1)).header, coordinator.box.publicKey.subarray(0, 16)),
    ).toThrow('coordinatorBoxSecretKey: expected Uint8Array of length 32, got length=16');
  });

  it('rejects header fields that do not fit the schema', () => {
    expect(codeOf(() => seal(new Uint8Array(1), 10, { siteId: 'has space' }))).toBe(
      'ENVELOPE_HEADER_INVALID',
    );
    expect(codeOf(() => seal(new Uint8Array(1), 10, { taskNonce: 'AAAA' }))).toBe('ENVELOPE_HEADER_INVALID');
  });
});

describe('wrong keys', () => {
  const s = seal(new Uint8Array(randomBytes(2500)));

  it('wrong coordinator key: the content key cannot be unsealed', () => {
    const e = codeOf(() =>
      openUpdate({
        ...s,
        siteSigningPublicKey: site.signing.publicKey,
        coordinatorBoxSecretKey: generatePartyKeys().box.secretKey,
      }),
    );
    expect(e).toBe('ENVELOPE_KEY_UNSEALABLE');
  });

  it('wrong site key: the header signature does not verify', () => {
    const e = codeOf(() =>
      openUpdate({
        ...s,
        siteSigningPublicKey: generatePartyKeys().signing.publicKey,
        coordinatorBoxSecretKey: coordinator.box.secretKey,
      }),
    );
    expect(e).toBe('ENVELOPE_SIGNATURE_INVALID');
  });

  it('another site cannot pass off its envelope as this one by editing siteId', () => {
    expect(codeOf(() => open({ ...s, header: { ...s.header, siteId: 'site-b' } }))).toBe(
      'ENVELOPE_SIGNATURE_INVALID',
    );
  });
});

describe('chunk manipulation', () => {
  const plaintext = new Uint8Array(randomBytes(3500));
  const s = seal(plaintext); // 4 chunks
  const [c0, c1, c2, c3] = s.chunks as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];

  it.each<[string, Uint8Array[], ErrorCode]>([
    ['reordered', [c1, c0, c2, c3], 'ENVELOPE_CHUNK_INVALID'],
    ['last two swapped', [c0, c1, c3, c2], 'ENVELOPE_CHUNK_INVALID'],
    ['middle dropped', [c0, c2, c3], 'ENVELOPE_CHUNK_INVALID'],
    ['last dropped', [c0, c1, c2], 'ENVELOPE_CHUNK_COUNT'],
    ['all dropped', [], 'ENVELOPE_CHUNK_COUNT'],
    ['duplicated', [c0, c0, c1, c2, c3], 'ENVELOPE_CHUNK_INVALID'],
    ['extra at the end', [c0, c1, c2, c3, c3], 'ENVELOPE_CHUNK_COUNT'],
    ['last truncated by one byte', [c0, c1, c2, c3.subarray(0, c3.length - 1)], 'ENVELOPE_CHUNK_INVALID'],
    ['last extended by one byte', [c0, c1, c2, Uint8Array.from([...c3, 0])], 'ENVELOPE_CHUNK_INVALID'],
    ['first truncated to its tag', [c0.subarray(0, 16), c1, c2, c3], 'ENVELOPE_CHUNK_INVALID'],
  ])('%s', (_name, chunks, code) => {
    expect(codeOf(() => open(s, chunks))).toBe(code);
  });

  it('a chunk from another envelope of the same site is rejected', () => {
    const other = seal(plaintext);
    expect(codeOf(() => open(s, [c0, other.chunks[1] ?? c1, c2, c3]))).toBe('ENVELOPE_CHUNK_INVALID');
  });

  it('truncating the envelope to fewer chunks in a re-signed header still fails (count is in every nonce)', () => {
    // Even the site itself cannot make a 2-chunk envelope out of a 4-chunk one's first chunks.
    const header = { ...s.header, plaintextBytes: 2 * CHUNK, chunkCount: 2 };
    const signature = signDomainJson('update', header, site.signing.secretKey);
    expect(codeOf(() => open({ header, signature, chunks: [c0, c1] }))).toBe('ENVELOPE_CHUNK_INVALID');
  });

  it('the signed ciphertext hash must match even when every chunk authenticates', () => {
    const header = { ...s.header, ciphertextSha512: 'f'.repeat(128) };
    const signature = signDomainJson('update', header, site.signing.secretKey);
    expect(codeOf(() => open({ header, signature, chunks: s.chunks }))).toBe('ENVELOPE_HASH_MISMATCH');
  });

  it('the opener enforces order, poisons itself after a failure and reports missing chunks', () => {
    const o = new UpdateOpener(s.header, coordinator.box.secretKey);
    expect(codeOf(() => o.openChunk(1, c1))).toBe('ENVELOPE_CHUNK_COUNT');
    expect(codeOf(() => o.openChunk(-1, c0))).toBe('ENVELOPE_CHUNK_COUNT');
    expect(codeOf(() => o.openChunk(4, c0))).toBe('ENVELOPE_CHUNK_COUNT');
    expect(o.openChunk(0, c0)).toEqual(plaintext.subarray(0, CHUNK));
    expect(codeOf(() => o.openChunk(0, c0))).toBe('ENVELOPE_CHUNK_COUNT');
    expect(codeOf(() => o.finish())).toBe('ENVELOPE_CHUNK_COUNT');
    expect(codeOf(() => o.openChunk(1, c2))).toBe('ENVELOPE_CHUNK_INVALID');
    // Poisoned: even the right chunk is now refused with the same error.
    expect(codeOf(() => o.openChunk(1, c1))).toBe('ENVELOPE_CHUNK_INVALID');
  });

  it('uses one opaque message for every authentication failure', () => {
    const messages = new Set<string>();
    for (const chunks of [[c1], [c0.subarray(1)], [Uint8Array.from(c0).fill(0)]]) {
      try {
        open(s, chunks);
      } catch (e) {
        messages.add((e as Error).message);
      }
    }
    expect([...messages]).toEqual(['update chunk failed authentication']);
  });
});

describe('verifyUpdateHeader', () => {
  const s = seal(new Uint8Array(10));

  it('accepts a good header and rejects malformed ones before checking signatures', () => {
    expect(() => verifyUpdateHeader(s.header, s.signature, site.signing.publicKey)).not.toThrow();
    expect(
      codeOf(() => verifyUpdateHeader({ ...s.header, round: 0 }, s.signature, site.signing.publicKey)),
    ).toBe('ENVELOPE_HEADER_INVALID');
    expect(
      codeOf(() =>
        verifyUpdateHeader({ ...s.header, extra: 1 } as never, s.signature, site.signing.publicKey),
      ),
    ).toBe('ENVELOPE_HEADER_INVALID');
    expect(
      codeOf(() => verifyUpdateHeader({ ...s.header, chunkCount: 2 }, s.signature, site.signing.publicKey)),
    ).toBe('ENVELOPE_HEADER_INVALID');
    expect(codeOf(() => verifyUpdateHeader(s.header, 'garbage', site.signing.publicKey))).toBe(
      'ENVELOPE_SIGNATURE_INVALID',
    );
  });

  it('refuses a correctly signed header of another protocol version', () => {
    const v2 = seal(new Uint8Array(10), CHUNK, { protocolVersion: PROTOCOL_VERSION + 1 });
    expect(codeOf(() => verifyUpdateHeader(v2.header, v2.signature, site.signing.publicKey))).toBe(
      'PROTOCOL_VERSION_MISMATCH',
    );
  });
});

describe('secret hygiene', () => {
  it('sealUpdate wipes the content key and the ephemeral secret key', () => {
    const keys: Uint8Array[] = [];
    const pairs: nacl.BoxKeyPair[] = [];
    const randomSpy = vi.spyOn(nacl, 'randomBytes');
    const keyPairSpy = vi.spyOn(nacl.box, 'keyPair');
    randomSpy.mockImplementation((n: number) => {
      const out = new Uint8Array(randomBytes(n));
      if (n === 32) keys.push(out);
      return out;
    });
    keyPairSpy.mockImplementation(() => {
      const kp = nacl.box.keyPair.fromSecretKey(new Uint8Array(randomBytes(32)));
      pairs.push(kp);
      return kp;
    });
    try {
      const s = seal(new Uint8Array(2000));
      expect(keys).toHaveLength(1);
      expect(pairs).toHaveLength(1);
      expect(keys[0]?.every((b) => b === 0)).toBe(true);
      expect(pairs[0]?.secretKey.every((b) => b === 0)).toBe(true);
      // The public half survives (it is in the header) and the envelope still opens.
      expect(toBase64(pairs[0]?.publicKey ?? new Uint8Array())).toBe(s.header.ephemeralPublicKey);
      expect(open(s)).toEqual(new Uint8Array(2000));
    } finally {
      randomSpy.mockRestore();
      keyPairSpy.mockRestore();
    }
  });

  it('UpdateOpener wipes the content key on finish, on dispose and after a failure', () => {
    const s = seal(new Uint8Array(1500));
    const keyOf = (o: UpdateOpener): Uint8Array => (o as unknown as { key: Uint8Array }).key;

    const finished = new UpdateOpener(s.header, coordinator.box.secretKey);
    const k1 = keyOf(finished);
    expect(k1.some((b) => b !== 0)).toBe(true);
    s.chunks.forEach((c, i) => finished.openChunk(i, c));
    finished.finish();
    expect(k1.every((b) => b === 0)).toBe(true);

    const disposed = new UpdateOpener(s.header, coordinator.box.secretKey);
    const k2 = keyOf(disposed);
    disposed.dispose();
    expect(k2.every((b) => b === 0)).toBe(true);
    expect(codeOf(() => disposed.openChunk(0, s.chunks[0] ?? new Uint8Array()))).toBe(
      'CRYPTO_INVALID_ARGUMENT',
    );

    const failed = new UpdateOpener(s.header, coordinator.box.secretKey);
    const k3 = keyOf(failed);
    expect(codeOf(() => failed.openChunk(0, s.chunks[1] ?? new Uint8Array()))).toBe('ENVELOPE_CHUNK_INVALID');
    expect(k3.every((b) => b === 0)).toBe(true);
  });
});
