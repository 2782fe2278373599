import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  UpdateOpener,
  generatePartyKeys,
  openUpdate,
  parseUpdateHeader,
  sealUpdate,
  sha256Hex,
  toBase64,
  verifyUpdateHeader,
} from '@fedssl/shared/crypto';
import { isFedsslError } from '@fedssl/shared/errors';
import { PROTOCOL_VERSION, type UpdateHeader } from '@fedssl/shared/protocol';
import { openEnvelopeFile } from '../../coordinator/src/uploads/update-store';

/**
 * Property-based fuzzing of the update envelope as the coordinator meets it: the header
 * parser, the signature check, the streaming opener and the coordinator's file opener never
 * throw anything but a FedsslError on arbitrary input, and no structural mutation of a real
 * envelope (a header field replaced by any JSON value, chunks dropped, duplicated, reordered,
 * truncated, extended, or the file cut or padded) is ever accepted. Bit flips are covered by
 * shared/src/crypto/envelope.props.test.ts.
 */

const site = generatePartyKeys();
const coordinator = generatePartyKeys();
const CHUNK = 512;
const plaintext = new Uint8Array(randomBytes(3 * CHUNK + 100));
const sealed = sealUpdate({
  plaintext,
  fields: {
    protocolVersion: PROTOCOL_VERSION,
    siteId: 'site-a',
    runId: 'run-1',
    round: 1,
    taskId: 'task-1',
    taskNonce: toBase64(new Uint8Array(randomBytes(32))),
    baseModelHash: sha256Hex(new Uint8Array([7])),
    exampleCount: 64,
    metrics: { loss: 0.5 },
    createdAt: '2030-01-01T00:00:00.000Z',
  },
  chunkSize: CHUNK,
  siteSigningSecretKey: site.signing.secretKey,
  coordinatorBoxPublicKey: coordinator.box.publicKey,
});
// Ed25519 and X25519 in tweetnacl cost milliseconds: bounded runs keep the file to seconds.
const RUNS = { numRuns: 60 };

/** What opening gives: the plaintext, a FedsslError code, or an escape (the bug this hunts). */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return isFedsslError(e) ? `refused:${e.code}` : `ESCAPED ${String(e)}`;
  }
}

function open(header: unknown, signature: unknown, chunks: unknown): string {
  return outcome(() =>
    openUpdate({
      header: header as UpdateHeader,
      signature: signature as string,
      chunks: chunks as Uint8Array[],
      siteSigningPublicKey: site.signing.publicKey,
      coordinatorBoxSecretKey: coordinator.box.secretKey,
    }),
  );
}

const junk = fc.anything({ withTypedArray: true, withBigInt: true, withNullPrototype: true, withMap: true });
const refused = expect.stringMatching(/^refused:/);

describe('envelope parsing and opening never throw a non-FedsslError', () => {
  it('sanity: the untouched envelope opens', () => {
    expect(open(sealed.header, sealed.signature, sealed.chunks)).toBe('accepted');
  });

  it('parseUpdateHeader(junk)', () => {
    fc.assert(
      fc.property(junk, (v) => {
        expect(outcome(() => parseUpdateHeader(v))).toEqual(refused);
      }),
      RUNS,
    );
  });

  it('verifyUpdateHeader with a junk header or a junk signature', () => {
    fc.assert(
      fc.property(junk, junk, (h, sig) => {
        expect(
          outcome(() => verifyUpdateHeader(h as UpdateHeader, sealed.signature, site.signing.publicKey)),
        ).toEqual(refused);
        expect(
          outcome(() => verifyUpdateHeader(sealed.header, sig as string, site.signing.publicKey)),
        ).toEqual(refused);
      }),
      RUNS,
    );
  });

  it('UpdateOpener with junk in place of the chunk stream', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.uint8Array({ maxLength: 700 }), junk), { maxLength: 6 }), (chunks) => {
        expect(open(sealed.header, sealed.signature, chunks)).toEqual(refused);
      }),
      RUNS,
    );
  });

  it("the coordinator's file opener with arbitrary file contents", () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedssl-fuzz-env-'));
    try {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 3000 }), (bytes) => {
          const file = join(dir, 'x.part');
          writeFileSync(file, bytes);
          expect(outcome(() => openEnvelopeFile(file, sealed.header, coordinator.box.secretKey))).toEqual(
            refused,
          );
        }),
        RUNS,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('no structural mutation of a real envelope is accepted', () => {
  const keys = Object.keys(sealed.header) as (keyof UpdateHeader)[];

  it('a header field replaced by any JSON value', () => {
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.jsonValue(), (key, value) => {
        fc.pre(JSON.stringify(value) !== JSON.stringify(sealed.header[key]));
        const header = { ...sealed.header, [key]: value };
        expect(open(header, sealed.signature, sealed.chunks)).toEqual(refused);
        // The opener alone (no signature check) must not accept a changed envelope field either.
        if (
          [
            'noncePrefix',
            'keyBox',
            'keyBoxNonce',
            'ephemeralPublicKey',
            'chunkCount',
            'ciphertextSha512',
          ].includes(key)
        )
          expect(
            outcome(() => {
              const o = new UpdateOpener(header as UpdateHeader, coordinator.box.secretKey);
              sealed.chunks.forEach((c, i) => o.openChunk(i, c));
              o.finish();
            }),
          ).toEqual(refused);
      }),
      RUNS,
    );
  });

  it('a header field removed, or one added', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...keys),
        fc.string({ minLength: 1 }),
        fc.jsonValue(),
        (key, extra, value) => {
          const { [key]: _gone, ...without } = sealed.header;
          expect(open(without, sealed.signature, sealed.chunks)).toEqual(refused);
          fc.pre(!(extra in sealed.header) && extra !== '__proto__');
          expect(open({ ...sealed.header, [extra]: value }, sealed.signature, sealed.chunks)).toEqual(
            refused,
          );
        },
      ),
      RUNS,
    );
  });

  const chunkMutation = fc.oneof(
    fc.nat().map((i) => (c: Uint8Array[]) => c.filter((_, k) => k !== i % c.length)), // drop
    fc.nat().map((i) => (c: Uint8Array[]) => [...c.slice(0, (i % c.length) + 1), ...c.slice(i % c.length)]), // duplicate
    fc.tuple(fc.nat(), fc.nat()).map(([i, j]) => (c: Uint8Array[]) => {
      const out = [...c];
      const [a, b] = [i % c.length, j % c.length];
      [out[a], out[b]] = [out[b]!, out[a]!];
      return out;
    }), // reorder (the identity swap is filtered below)
    fc.tuple(fc.nat(), fc.integer({ min: 1, max: 64 })).map(
      ([i, n]) =>
        (c: Uint8Array[]) =>
          c.map((x, k) => (k === i % c.length ? x.subarray(0, Math.max(0, x.length - n)) : x)),
    ), // truncate one
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((tail) => (c: Uint8Array[]) => [...c, tail]), // extra chunk
    fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 32 })).map(
      ([i, tail]) =>
        (c: Uint8Array[]) =>
          c.map((x, k) => (k === i % c.length ? Buffer.concat([x, tail]) : x)),
    ), // extend one
  );

  it('chunks dropped, duplicated, reordered, truncated, extended, or one added', () => {
    fc.assert(
      fc.property(chunkMutation, (mutate) => {
        const chunks = mutate(sealed.chunks);
        fc.pre(
          !(
            chunks.length === sealed.chunks.length &&
            chunks.every((c, i) => Buffer.from(c).equals(sealed.chunks[i]!))
          ),
        );
        expect(open(sealed.header, sealed.signature, chunks)).toEqual(refused);
      }),
      RUNS,
    );
  });

  it("the coordinator's envelope file cut short or padded", () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedssl-fuzz-env-'));
    const whole = Buffer.concat(sealed.chunks);
    try {
      fc.assert(
        fc.property(
          fc.integer({ min: -whole.length, max: 64 }).filter((d) => d !== 0),
          (delta) => {
            const file = join(dir, 'x.part');
            writeFileSync(
              file,
              delta < 0
                ? whole.subarray(0, whole.length + delta)
                : Buffer.concat([whole, Buffer.alloc(delta)]),
            );
            expect(outcome(() => openEnvelopeFile(file, sealed.header, coordinator.box.secretKey))).toEqual(
              refused,
            );
          },
        ),
        RUNS,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
