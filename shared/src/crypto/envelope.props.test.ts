import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFedsslError, type ErrorCode } from '../errors';
import { PROTOCOL_VERSION, type UpdateHeader } from '../protocol/messages';
import { fromBase64, toBase64 } from './bytes';
import { sha256Hex } from './hash';
import { generatePartyKeys } from './keys';
import { UpdateOpener, openUpdate, sealUpdate } from './envelope';

/**
 * Property: every single-bit flip anywhere an attacker can reach (any header field's value,
 * the signature, the key box, any chunk) is rejected with a FedsslError. Bit positions are
 * sampled by fast-check; runs are bounded so the file stays well under a few seconds.
 */

const site = generatePartyKeys();
const coordinator = generatePartyKeys();
const CHUNK = 1024;
const plaintext = new Uint8Array(randomBytes(3.5 * CHUNK));
const sealed = sealUpdate({
  plaintext,
  fields: {
    protocolVersion: PROTOCOL_VERSION,
    siteId: 'site-a',
    runId: 'run-1',
    round: 2,
    taskId: 'task-7',
    taskNonce: toBase64(new Uint8Array(randomBytes(32))),
    baseModelHash: sha256Hex(new Uint8Array([1, 2, 3])),
    exampleCount: 128,
    // Non-zero metrics: flipping the sign bit of 0 gives -0, which JSON cannot tell apart.
    metrics: { loss: 0.25, steps: 10 },
    createdAt: '2025-01-01T00:00:00.000Z',
  },
  chunkSize: CHUNK,
  siteSigningSecretKey: site.signing.secretKey,
  coordinatorBoxPublicKey: coordinator.box.publicKey,
});
// tweetnacl's Ed25519 verify and X25519 cost milliseconds each; these bounds keep the file ~5 s.
const RUNS = { numRuns: 50 };

function rejection(
  header: UpdateHeader,
  signature: string,
  chunks: Uint8Array[],
): ErrorCode | 'accepted' | 'non-Fedssl error' {
  try {
    openUpdate({
      header,
      signature,
      chunks,
      siteSigningPublicKey: site.signing.publicKey,
      coordinatorBoxSecretKey: coordinator.box.secretKey,
    });
    return 'accepted';
  } catch (e) {
    return isFedsslError(e) ? e.code : 'non-Fedssl error';
  }
}

function flipBit(bytes: Uint8Array, bit: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  const i = Math.floor(bit / 8) % out.length;
  out[i] = (out[i] ?? 0) ^ (1 << (bit % 8));
  return out;
}

/** Flip one bit of a JSON value: a char code bit of a string, an IEEE-754 bit of a number. */
function flipValue(value: unknown, seed: number): unknown {
  if (typeof value === 'string') {
    const i = seed % value.length;
    const bit = Math.floor(seed / value.length) % 7; // stay in 7-bit ASCII
    return value.slice(0, i) + String.fromCharCode(value.charCodeAt(i) ^ (1 << bit)) + value.slice(i + 1);
  }
  if (typeof value === 'number') {
    const dv = new DataView(new ArrayBuffer(8));
    dv.setFloat64(0, value);
    const bit = seed % 64;
    dv.setUint8(bit >> 3, dv.getUint8(bit >> 3) ^ (1 << (bit & 7)));
    return dv.getFloat64(0);
  }
  if (value !== null && typeof value === 'object') {
    // metrics: flip either a key or a value of one entry.
    const entries = Object.entries(value);
    const k = seed % entries.length;
    const [key, v] = entries[k] ?? ['', 0];
    const rest = Math.floor(seed / entries.length);
    const out = { ...(value as Record<string, unknown>) };
    if (rest % 2 === 0) out[key] = flipValue(v, rest >> 1);
    else {
      delete out[key];
      out[String(flipValue(key, rest >> 1))] = v;
    }
    return out;
  }
  throw new Error(`unexpected header value ${String(value)}`);
}

const headerKeys = Object.keys(sealed.header) as (keyof UpdateHeader)[];

describe('every single-bit flip is rejected', () => {
  it('sanity: the untouched envelope opens', () => {
    expect(rejection(sealed.header, sealed.signature, sealed.chunks)).toBe('accepted');
  });

  // One property per field, so every field is guaranteed its share of sampled bit positions.
  it.each(headerKeys)('in header field %s (re-serialized through JSON)', (key) => {
    fc.assert(
      fc.property(fc.nat(1 << 20), (seed) => {
        const flipped = { ...sealed.header, [key]: flipValue(sealed.header[key], seed) };
        const header = JSON.parse(JSON.stringify(flipped)) as UpdateHeader;
        const code = rejection(header, sealed.signature, sealed.chunks);
        expect(['ENVELOPE_HEADER_INVALID', 'ENVELOPE_SIGNATURE_INVALID']).toContain(code);
      }),
      { numRuns: 8 },
    );
  });

  it('in the signature bytes', () => {
    const sig = fromBase64(sealed.signature, 64);
    fc.assert(
      fc.property(fc.nat(64 * 8 - 1), (bit) => {
        expect(rejection(sealed.header, toBase64(flipBit(sig, bit)), sealed.chunks)).toBe(
          'ENVELOPE_SIGNATURE_INVALID',
        );
      }),
      RUNS,
    );
  });

  it('in the signature string (including base64 padding bits)', () => {
    fc.assert(
      fc.property(fc.nat(sealed.signature.length * 7 - 1), (seed) => {
        const flipped = String(flipValue(sealed.signature, seed));
        expect(rejection(sealed.header, flipped, sealed.chunks)).toBe('ENVELOPE_SIGNATURE_INVALID');
      }),
      RUNS,
    );
  });

  it('in the key box, even if the header signature were not checked (opener alone)', () => {
    const box = fromBase64(sealed.header.keyBox, 48);
    fc.assert(
      fc.property(fc.nat(48 * 8 - 1), (bit) => {
        const header = { ...sealed.header, keyBox: toBase64(flipBit(box, bit)) };
        let code: string = 'accepted';
        try {
          new UpdateOpener(header, coordinator.box.secretKey);
        } catch (e) {
          code = isFedsslError(e) ? e.code : 'non-Fedssl error';
        }
        expect(code).toBe('ENVELOPE_KEY_UNSEALABLE');
        // And through the full path, the signature catches it first.
        expect(rejection(header, sealed.signature, sealed.chunks)).toBe('ENVELOPE_SIGNATURE_INVALID');
      }),
      RUNS,
    );
  });

  it('in the ephemeral public key or key-box nonce (opener alone)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('ephemeralPublicKey' as const, 'keyBoxNonce' as const),
        fc.nat(24 * 8 - 1),
        (field, bit) => {
          const bytes = fromBase64(sealed.header[field]);
          const header = { ...sealed.header, [field]: toBase64(flipBit(bytes, bit)) };
          expect(() => new UpdateOpener(header, coordinator.box.secretKey)).toThrow('cannot be unsealed');
        },
      ),
      { numRuns: 40 },
    );
  });

  it('in any chunk', () => {
    const total = sealed.chunks.reduce((n, c) => n + c.length, 0);
    fc.assert(
      fc.property(fc.nat(total * 8 - 1), (bit) => {
        let pos = Math.floor(bit / 8);
        const chunks = sealed.chunks.map((c) => {
          const hit = pos >= 0 && pos < c.length;
          const out = hit ? flipBit(c, pos * 8 + (bit % 8)) : c;
          pos -= c.length;
          return out;
        });
        // Straight to the opener (the header is untouched, so its signature would pass anyway).
        const opener = new UpdateOpener(sealed.header, coordinator.box.secretKey);
        let code: string = 'accepted';
        try {
          chunks.forEach((c, i) => opener.openChunk(i, c));
          opener.finish();
        } catch (e) {
          code = isFedsslError(e) ? e.code : 'non-Fedssl error';
        }
        expect(code).toBe('ENVELOPE_CHUNK_INVALID');
      }),
      { numRuns: 150 },
    );
  });
});
