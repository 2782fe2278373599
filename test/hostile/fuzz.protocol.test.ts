import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as protocol from '@fedssl/shared/protocol';
import { MAX_CHUNK_BYTES, PROTOCOL_VERSION } from '@fedssl/shared/protocol';

/**
 * Property-based fuzzing of every runtime schema `@fedssl/shared/protocol` exports: arbitrary
 * junk (any JS value, including exotic ones no JSON decoder makes) is answered by a parse
 * failure, never by an exception; object schemas refuse non-objects; and the messages an
 * agent sends are accepted when well-formed and refused with one unknown key more or one
 * required key less. Runs are bounded so the file takes seconds.
 */

type Schema = {
  safeParse(v: unknown): { success: boolean };
  def?: { type?: string };
};

const SCHEMAS = Object.entries(protocol)
  .filter(([, v]) => typeof (v as Partial<Schema> | null)?.safeParse === 'function')
  .map(([name, schema]) => ({ name, schema: schema as Schema }));

const RUNS = { numRuns: 100 };

const junk = fc.anything({
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withNullPrototype: true,
  withObjectString: true,
  withSet: true,
  withSparseArray: true,
  withTypedArray: true,
  withUnicodeString: true,
});

describe('every protocol schema under arbitrary input', () => {
  it('finds the schemas (sanity)', () => {
    const names = SCHEMAS.map((s) => s.name);
    for (const n of ['agentHandshakeSchema', 'uploadBeginSchema', 'uploadChunkSchema', 'signedTaskSchema'])
      expect(names).toContain(n);
    expect(names.length).toBeGreaterThan(30);
  });

  it.each(SCHEMAS)('$name: junk gives a parse result, never an exception', ({ schema }) => {
    fc.assert(
      fc.property(junk, (v) => {
        expect(() => schema.safeParse(v)).not.toThrow();
      }),
      RUNS,
    );
  });

  it.each(SCHEMAS.filter((s) => s.schema.def?.type === 'object'))(
    '$name: refuses every non-object',
    ({ schema }) => {
      fc.assert(
        fc.property(
          fc.oneof(
            fc.string(),
            fc.double(),
            fc.boolean(),
            fc.constant(null),
            fc.constant(undefined),
            fc.array(junk),
          ),
          (v) => {
            expect(schema.safeParse(v).success).toBe(false);
          },
        ),
        RUNS,
      );
    },
  );
});

// ---------------------------------------------------------------- what agents send

const idArb = fc.stringMatching(/^[A-Za-z0-9._:-]{1,40}$/);
const b64Of = (n: number) =>
  fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b).toString('base64'));
const hex = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));
const iso = fc
  .integer({ min: Date.parse('2000-01-01'), max: Date.parse('2100-01-01') })
  .map((t) => new Date(t).toISOString());

/** Well-formed instances of the messages the coordinator receives from agents. */
const VALID: { name: string; schema: Schema; arb: fc.Arbitrary<Record<string, unknown>> }[] = [
  {
    name: 'agentHandshake',
    schema: protocol.agentHandshakeSchema,
    arb: fc.record({
      siteId: idArb,
      protocolVersion: fc.integer(),
      agentVersion: fc.string({ maxLength: 64 }),
    }),
  },
  { name: 'authResponse', schema: protocol.authResponseSchema, arb: fc.record({ signature: b64Of(64) }) },
  {
    name: 'agentStatus',
    schema: protocol.agentStatusSchema,
    arb: fc.record({
      state: fc.constantFrom('idle', 'downloading', 'training', 'uploading'),
      backend: fc.string({ maxLength: 64 }),
      exampleCount: fc.nat(),
      agentVersion: fc.string({ maxLength: 64 }),
    }),
  },
  {
    name: 'taskFailed',
    schema: protocol.taskFailedSchema,
    arb: fc.record({
      taskId: idArb,
      code: fc.string({ maxLength: 64 }),
      message: fc.string({ maxLength: 1000 }),
    }),
  },
  {
    name: 'taskProgress',
    schema: protocol.taskProgressSchema,
    arb: fc.record({
      taskId: idArb,
      step: fc.nat(),
      totalSteps: fc.nat(),
      loss: fc.double({ noNaN: true, noDefaultInfinity: true }),
    }),
  },
  {
    name: 'modelManifestRequest',
    schema: protocol.modelManifestRequestSchema,
    arb: fc.record({ version: idArb }),
  },
  {
    name: 'modelChunkRequest',
    schema: protocol.modelChunkRequestSchema,
    arb: fc.record({
      version: idArb,
      offset: fc.nat(),
      length: fc.integer({ min: 1, max: MAX_CHUNK_BYTES }),
    }),
  },
  {
    name: 'uploadChunk',
    schema: protocol.uploadChunkSchema,
    arb: fc.record({ uploadId: idArb, index: fc.nat(), data: fc.uint8Array({ maxLength: 4096 }) }),
  },
  { name: 'uploadCommit', schema: protocol.uploadCommitSchema, arb: fc.record({ uploadId: idArb }) },
  {
    name: 'uploadBegin',
    schema: protocol.uploadBeginSchema,
    arb: fc.record({
      header: fc
        .record({
          protocolVersion: fc.constant(PROTOCOL_VERSION),
          siteId: idArb,
          runId: idArb,
          round: fc.integer({ min: 1, max: 1e6 }),
          taskId: idArb,
          taskNonce: b64Of(32),
          baseModelHash: hex(64),
          exampleCount: fc.integer({ min: 1, max: 1e9 }),
          metrics: fc.dictionary(
            fc.string({ maxLength: 64 }),
            fc.double({ noNaN: true, noDefaultInfinity: true }),
          ),
          createdAt: iso,
          chunkSize: fc.integer({ min: 1, max: MAX_CHUNK_BYTES }),
          plaintextBytes: fc.nat(),
          noncePrefix: b64Of(16),
          ephemeralPublicKey: b64Of(32),
          keyBoxNonce: b64Of(24),
          keyBox: b64Of(48),
          ciphertextSha512: hex(128),
        })
        .map((h) => ({ ...h, chunkCount: Math.max(1, Math.ceil(h.plaintextBytes / h.chunkSize)) })),
      signature: b64Of(64),
    }),
  },
  {
    name: 'enrollRequest',
    schema: protocol.enrollRequestSchema,
    arb: fc.record({
      token: fc.string({ minLength: 16, maxLength: 256 }),
      signingPublicKey: b64Of(32),
      boxPublicKey: b64Of(32),
      agentVersion: fc.string({ maxLength: 64 }),
      protocolVersion: fc.integer(),
    }),
  },
];

describe('messages agents send: accepted when well-formed, refused when bent', () => {
  it.each(VALID)('$name: well-formed is accepted', ({ schema, arb }) => {
    fc.assert(
      fc.property(arb, (v) => {
        expect(schema.safeParse(v).success).toBe(true);
      }),
      RUNS,
    );
  });

  it.each(VALID)('$name: one unknown key more is refused', ({ schema, arb }) => {
    fc.assert(
      fc.property(arb, fc.string({ minLength: 1 }), junk, (v, key, value) => {
        fc.pre(!(key in v) && key !== '__proto__');
        expect(schema.safeParse({ ...v, [key]: value }).success).toBe(false);
      }),
      RUNS,
    );
  });

  it.each(VALID)(
    '$name: one required key less, or replaced by junk of another type, is refused',
    ({ schema, arb }) => {
      fc.assert(
        fc.property(
          arb,
          fc.nat(),
          fc.oneof(fc.constant(undefined), fc.constant(null), fc.object()),
          (v, i, bad) => {
            const keys = Object.keys(v);
            const key = keys[i % keys.length]!;
            const bent = { ...v };
            if (bad === undefined) delete bent[key];
            else bent[key] = bad;
            expect(schema.safeParse(bent).success).toBe(false);
          },
        ),
        RUNS,
      );
    },
  );
});
