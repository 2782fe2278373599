import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { isFedsslError } from '../errors';
import { PROTOCOL_VERSION } from '../protocol/messages';
import { toBase64 } from './bytes';
import {
  bulkBackend,
  loadNativeBulk,
  resolveBulkBackend,
  setBulkBackend,
  tweetnaclBulk,
} from './bulk-backend';
import { UpdateOpener, openUpdate, sealUpdate } from './envelope';
import { generatePartyKeys } from './keys';

const native = loadNativeBulk();

/** Byte equality without vitest's per-element deep-equal (slow on 70 kB arrays). */
const hex = (b: Uint8Array | null): string | null => (b ? Buffer.from(b).toString('hex') : null);

afterEach(() => {
  setBulkBackend('auto');
});

const keyArb = fc.uint8Array({ minLength: 32, maxLength: 32 });
const nonceArb = fc.uint8Array({ minLength: 24, maxLength: 24 });
// Sizes around Salsa20's 64-byte blocks and the 32-byte Poly1305 key block, plus a few large ones.
const messageArb = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.integer({ min: 0, max: 40_000 }).map((n) => new Uint8Array(randomBytes(n))),
);

describe.runIf(native !== null)('sodium-native secretbox against tweetnacl (reference)', () => {
  const sodium = native!;

  it('seals byte-identically for random keys, nonces and sizes (fast-check)', () => {
    fc.assert(
      fc.property(keyArb, nonceArb, messageArb, (key, nonce, m) => {
        const expected = nacl.secretbox(m, nonce, key);
        const got = sodium.seal(m, nonce, key);
        expect(got.length).toBe(m.length + 16);
        expect(hex(got)).toBe(hex(expected));
        expect(hex(tweetnaclBulk.open(got, nonce, key))).toBe(hex(m));
        expect(hex(sodium.open(expected, nonce, key))).toBe(hex(m));
        const into = new Uint8Array(m.length);
        expect(sodium.openInto(expected, nonce, key, into)).toBe(true);
        expect(hex(into)).toBe(hex(m));
      }),
      { numRuns: 150 },
    );
  });

  it('refuses every single-bit flip, a wrong key, a wrong nonce and a short input, as tweetnacl does', () => {
    fc.assert(
      fc.property(keyArb, nonceArb, fc.uint8Array({ maxLength: 300 }), fc.nat(), (key, nonce, m, at) => {
        const c = sodium.seal(m, nonce, key);
        const bit = at % (c.length * 8);
        const bad = Uint8Array.from(c);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        expect(sodium.open(bad, nonce, key)).toBeNull();
        expect(nacl.secretbox.open(bad, nonce, key)).toBeNull();
        const otherKey = Uint8Array.from(key);
        otherKey[0]! ^= 0x80;
        expect(sodium.open(c, nonce, otherKey)).toBeNull();
        const otherNonce = Uint8Array.from(nonce);
        otherNonce[23]! ^= 1;
        expect(sodium.open(c, otherNonce, key)).toBeNull();
        expect(sodium.open(c.subarray(0, 15), nonce, key)).toBeNull();
        const out = new Uint8Array(m.length).fill(0xa5);
        expect(sodium.openInto(bad, nonce, key, out)).toBe(false);
        expect(tweetnaclBulk.openInto(bad, nonce, key, out)).toBe(false);
        expect(out.every((b) => b === 0xa5)).toBe(true); // untouched on failure
      }),
      { numRuns: 100 },
    );
  });

  it('opens from unaligned views into a larger buffer', () => {
    const key = new Uint8Array(randomBytes(32));
    const nonce = new Uint8Array(randomBytes(24));
    const m = new Uint8Array(randomBytes(1000));
    const c = nacl.secretbox(m, nonce, key);
    const big = new Uint8Array(c.length + 3);
    big.set(c, 3);
    expect(sodium.open(big.subarray(3), nonce, key)).toEqual(m);
    const mBig = new Uint8Array(m.length + 5);
    mBig.set(m, 5);
    expect(sodium.seal(mBig.subarray(5), nonce, key)).toEqual(c);
  });

  it('rejects a short key or nonce with a coded error instead of reading past it', () => {
    const e = (() => {
      try {
        sodium.seal(new Uint8Array(4), new Uint8Array(23), new Uint8Array(32));
      } catch (err) {
        return err;
      }
      return null;
    })();
    expect(isFedsslError(e, 'CRYPTO_INVALID_ARGUMENT')).toBe(true);
    expect((e as Error).message).toBe('secretbox: expected a 24-byte nonce and a 32-byte key, got 23 and 32');
    expect(() => sodium.open(new Uint8Array(20), new Uint8Array(24), new Uint8Array(31))).toThrow(
      'got 24 and 31',
    );
  });

  it('is what auto picks', () => {
    expect(setBulkBackend('auto')).toBe('sodium-native');
    expect(bulkBackend().name).toBe('sodium-native');
  });
});

describe('backend selection and the tweetnacl fallback', () => {
  const site = generatePartyKeys();
  const coordinator = generatePartyKeys();
  const fields = {
    protocolVersion: PROTOCOL_VERSION,
    siteId: 'site-a',
    runId: 'run-1',
    round: 1,
    taskId: 'task-1',
    taskNonce: toBase64(new Uint8Array(32)),
    baseModelHash: 'a'.repeat(64),
    exampleCount: 10,
    metrics: {},
    createdAt: '2025-01-01T00:00:00.000Z',
  };
  const seal = (plaintext: Uint8Array) =>
    sealUpdate({
      plaintext,
      fields,
      chunkSize: 4096,
      siteSigningSecretKey: site.signing.secretKey,
      coordinatorBoxPublicKey: coordinator.box.publicKey,
    });
  const open = (s: ReturnType<typeof seal>) =>
    openUpdate({
      ...s,
      siteSigningPublicKey: site.signing.publicKey,
      coordinatorBoxSecretKey: coordinator.box.secretKey,
    });

  it('forcing tweetnacl makes the envelope use it, and envelopes cross between backends', () => {
    const plaintext = new Uint8Array(randomBytes(10_000));
    expect(setBulkBackend('tweetnacl')).toBe('tweetnacl');
    expect(bulkBackend()).toBe(tweetnaclBulk);
    const byFallback = seal(plaintext);
    expect(open(byFallback)).toEqual(plaintext);
    setBulkBackend('auto');
    expect(open(byFallback)).toEqual(plaintext);
    const byAuto = seal(plaintext);
    setBulkBackend('tweetnacl');
    expect(open(byAuto)).toEqual(plaintext);
  });

  it('UpdateOpener.openChunkInto decrypts in place like openChunk, on both backends, and fails closed', () => {
    const plaintext = new Uint8Array(randomBytes(10_000));
    for (const backend of ['tweetnacl', 'auto'] as const) {
      setBulkBackend(backend);
      const s = seal(plaintext);
      const opener = new UpdateOpener(s.header, coordinator.box.secretKey);
      const out = new Uint8Array(plaintext.length);
      s.chunks.forEach((c, i) =>
        opener.openChunkInto(i, c, out.subarray(i * 4096, i * 4096 + c.length - 16)),
      );
      opener.finish();
      expect(hex(out)).toBe(hex(plaintext));

      const wrongSize = new UpdateOpener(s.header, coordinator.box.secretKey);
      expect(() => wrongSize.openChunkInto(0, s.chunks[0]!, new Uint8Array(10))).toThrow(
        'out: expected 4096 bytes for chunk 0, got 10',
      );
      const tampered = new UpdateOpener(s.header, coordinator.box.secretKey);
      const bad = Uint8Array.from(s.chunks[1]!);
      bad[100]! ^= 1;
      tampered.openChunkInto(0, s.chunks[0]!, new Uint8Array(4096));
      let code = '';
      try {
        tampered.openChunkInto(1, bad, new Uint8Array(4096));
      } catch (e) {
        code = isFedsslError(e) ? e.code : 'foreign';
      }
      expect(code).toBe('ENVELOPE_CHUNK_INVALID');
      // Poisoned: even the genuine chunk is refused now.
      expect(() => tampered.openChunkInto(1, s.chunks[1]!, new Uint8Array(4096))).toThrow(
        'update chunk failed authentication',
      );
    }
  });

  it('FEDSSL_BULK_CRYPTO picks the backend at first use (fresh module instance)', async () => {
    const saved = process.env.FEDSSL_BULK_CRYPTO;
    const fresh = async (value: string) => {
      process.env.FEDSSL_BULK_CRYPTO = value;
      vi.resetModules();
      const m = await import('./bulk-backend');
      try {
        return m.bulkBackend().name;
      } catch (e) {
        return isFedsslError(e) ? `${e.code}: ${e.message}` : String(e);
      }
    };
    try {
      expect(await fresh('tweetnacl')).toBe('tweetnacl');
      expect(await fresh('')).toBe(native ? 'sodium-native' : 'tweetnacl');
      expect(await fresh('libsodium')).toBe(
        'CRYPTO_INVALID_ARGUMENT: FEDSSL_BULK_CRYPTO: expected auto, sodium-native or tweetnacl, got "libsodium"',
      );
    } finally {
      if (saved === undefined) delete process.env.FEDSSL_BULK_CRYPTO;
      else process.env.FEDSSL_BULK_CRYPTO = saved;
      vi.resetModules();
    }
  });

  it('auto falls back to tweetnacl when sodium-native does not load; asking for it explicitly then fails', () => {
    const missing = () => {
      throw new Error("Cannot find module 'sodium-native'");
    };
    expect(loadNativeBulk(missing)).toBeNull();
    expect(resolveBulkBackend('auto', missing)).toBe(tweetnaclBulk);
    expect(() => resolveBulkBackend('sodium-native', missing)).toThrow(
      'sodium-native was requested but does not load here',
    );
    // A foreign build whose tag size differs is not trusted either.
    expect(loadNativeBulk(() => ({ crypto_secretbox_MACBYTES: 32 }))).toBeNull();
  });
});
