import { afterEach, describe, expect, it, vi } from 'vitest';
import { generatePartyKeys } from '@fedssl/shared/crypto';
import type * as Crypto from '@fedssl/shared/crypto';
import { PROTOCOL_VERSION } from '@fedssl/shared/protocol';
import { FederationFixture, testRunBody } from '../runs/federation.fixture';
import { codeOf } from '../testing/errors';

// Every header signature check the upload service can make, counted (the real functions run).
const checks = vi.hoisted(() => ({ signedBy: 0, verify: 0 }));
vi.mock('@fedssl/shared/crypto', async (importOriginal) => {
  const real = await importOriginal<typeof Crypto>();
  return {
    ...real,
    updateHeaderSignedBy: (...a: Parameters<typeof real.updateHeaderSignedBy>) => {
      checks.signedBy++;
      return real.updateHeaderSignedBy(...a);
    },
    verifyUpdateHeader: (...a: Parameters<typeof real.verifyUpdateHeader>) => {
      checks.verify++;
      return real.verifyUpdateHeader(...a);
    },
  };
});

describe('UploadService.begin verifies the update header signature once', () => {
  let f: FederationFixture | undefined;
  afterEach(async () => f?.close());

  async function siteWithTask() {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.01);
    const pending = a.nextTask();
    f.connect(a);
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 1 }));
    await f.runs.start(run.id);
    return { f, a, task: await pending };
  }
  const count = () => checks.signedBy + checks.verify;

  it('one Ed25519 verification for a header signed by the current key, and the upload begins', async () => {
    const { f, a, task } = await siteWithTask();
    const sealed = a.seal(task);
    checks.signedBy = checks.verify = 0;
    const begun = await f.uploads.begin('site-a', { header: sealed.header, signature: sealed.signature });
    expect(begun.nextIndex).toBe(0);
    expect(count()).toBe(1);
  });

  it('still refuses a wrong signature, a malformed header and another protocol version, with their codes', async () => {
    const { f, a, task } = await siteWithTask();
    const begin = (s: ReturnType<typeof a.seal>) =>
      codeOf(() => f.uploads.begin('site-a', { header: s.header, signature: s.signature }));
    const stranger = a.seal(task, { signingSecretKey: generatePartyKeys().signing.secretKey });
    checks.signedBy = checks.verify = 0;
    expect(await begin(stranger)).toBe('ENVELOPE_SIGNATURE_INVALID');
    expect(count()).toBe(1);
    // chunkCount no longer fits plaintextBytes: the schema check comes before the signature's.
    const sealed = a.seal(task);
    const miscounted = { ...sealed, header: { ...sealed.header, chunkCount: sealed.header.chunkCount + 1 } };
    expect(await begin(miscounted)).toBe('ENVELOPE_HEADER_INVALID');
    expect(
      await begin(a.seal(task, { fields: (h) => void (h.protocolVersion = PROTOCOL_VERSION + 1) })),
    ).toBe('PROTOCOL_VERSION_MISMATCH');
  });
});
