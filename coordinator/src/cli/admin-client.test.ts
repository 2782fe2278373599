import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAdminCliAt } from '../testing/admin-cli';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

describe('fedssl-admin: mistakes in the token or the URL get errors that say what to change', () => {
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

  it('accepts a URL copied with /api/v1 or a trailing slash', async () => {
    const admin = await c.token('admin', 'url-admin');
    for (const url of [`${c.url}/api/v1`, `${c.url}/api/v1/`, `${c.url}/`]) {
      const r = await runAdminCliAt(url, admin, ['sites', 'list']);
      expect([url, r.code, r.err]).toEqual([url, 0, '']);
    }
  });

  it('refuses a URL without http:// or https:// before sending anything', async () => {
    const r = await runAdminCliAt('coordinator.example.org:8080', 'x', ['sites', 'list']);
    expect(r.err).toBe(
      'error: INVALID_ARGUMENT: --url (or FEDSSL_URL) must be the coordinator\'s http:// or https:// address, e.g. https://coordinator.example.org; got "coordinator.example.org:8080"\n',
    );
  });

  it('says so when https:// is used on a port that speaks plain HTTP', async () => {
    const https = c.url.replace('http:', 'https:');
    const r = await runAdminCliAt(https, 'x', ['sites', 'list']);
    expect(r.err).toBe(
      `error: COORDINATOR_UNREACHABLE: cannot reach ${https}: ERR_SSL_WRONG_VERSION_NUMBER (this port does not speak TLS: use http://, or the address of the TLS proxy in front)\n`,
    );
  });
});
