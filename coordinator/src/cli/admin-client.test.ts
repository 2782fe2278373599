import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAdminCliAt } from '../testing/admin-cli';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

describe('fedssl-admin without a usable admin token', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-cli-token-' });
  });
  afterAll(async () => c?.close());

  it('says which flag or variable is missing, not which HTTP header', async () => {
    const r = await runAdminCliAt(c.url, '', ['sites', 'list']);
    expect([r.code, r.out]).toEqual([1, '']);
    expect(r.err).toBe(
      'error: ADMIN_UNAUTHORIZED: no admin token given: pass --token <admin token> or set FEDSSL_ADMIN_TOKEN (an admin creates one with `fedssl-admin admin-tokens create`, the first with `fedssl-coordinator bootstrap-admin`) (HTTP 401 GET /sites)\n',
    );
  });

  it("keeps the coordinator's words for a token that was given but is not valid", async () => {
    const r = await runAdminCliAt(c.url, `fsa_${'D'.repeat(43)}`, ['sites', 'list']);
    expect(r.err).toBe('error: ADMIN_UNAUTHORIZED: invalid or revoked admin token (HTTP 401 GET /sites)\n');
  });
});
