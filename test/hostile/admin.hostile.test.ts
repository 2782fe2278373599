import { AdminTokenRepository } from '../../coordinator/src/admin/admin-token.repository';
import { ADMIN_TOKEN_PREFIX } from '../../coordinator/src/admin/admin-token.service';
import { hashSecretToken, newId, newSecretToken } from '../../coordinator/src/keys/secret-token';
import type { HostileCoordinator, HttpResult, Refusal } from './harness';
import { describeHostileTable, type HostileCase } from './suite';

/**
 * The admin REST API under attack while a round is collecting: every request below would
 * stop the run or cut an honest site out of it if it got through. Missing, malformed,
 * unknown, revoked, expired and under-privileged tokens; malformed and oversized bodies;
 * path traversal in resource names; a forged enrollment.
 */

const refusal = (r: HttpResult): Refusal =>
  typeof r.body === 'object' && r.body?.error ? (r.body.error as Refusal) : { code: `HTTP_${r.status}` };

async function tokenOf(h: HostileCoordinator, role: 'admin' | 'operator' | 'viewer'): Promise<string> {
  return (await h.api('POST', '/admin-tokens', { name: `hostile ${role}`, role })).token as string;
}

/** An admin token whose expiry passed (as if created a day ago, valid for an hour). */
async function expiredToken(h: HostileCoordinator): Promise<string> {
  const token = newSecretToken(ADMIN_TOKEN_PREFIX);
  await h.c.app.get(AdminTokenRepository).insert({
    id: newId('adm'),
    name: 'expired',
    role: 'admin',
    tokenHash: hashSecretToken(token),
    createdAt: new Date(Date.now() - 86_400_000).toISOString(),
    expiresAt: new Date(Date.now() - 82_800_000).toISOString(),
  });
  return token;
}

const log = 'request refused';

const CASES: HostileCase[] = [
  {
    name: 'cancel the run with no token',
    code: 'ADMIN_UNAUTHORIZED',
    log,
    act: async ({ h, runId }) => refusal(await h.http('POST', `/runs/${runId}/cancel`, { token: null })),
  },
  {
    name: 'cancel the run with a Basic authorization header',
    code: 'ADMIN_UNAUTHORIZED',
    log,
    act: async ({ h, runId }) =>
      refusal(
        await h.http('POST', `/runs/${runId}/cancel`, {
          token: null,
          headers: { authorization: `Basic ${Buffer.from('admin:admin').toString('base64')}` },
        }),
      ),
  },
  {
    name: 'cancel the run with a made-up token',
    code: 'ADMIN_UNAUTHORIZED',
    log,
    act: async ({ h, runId }) =>
      refusal(
        await h.http('POST', `/runs/${runId}/cancel`, { token: `${ADMIN_TOKEN_PREFIX}${'A'.repeat(43)}` }),
      ),
  },
  {
    name: 'revoke an honest site with a revoked admin token',
    code: 'ADMIN_UNAUTHORIZED',
    log,
    act: async ({ h, honest }) => {
      const created = await h.api('POST', '/admin-tokens', { name: 'to revoke', role: 'admin' });
      await h.api('POST', `/admin-tokens/${created.id as string}/revoke`);
      return refusal(
        await h.http('POST', `/sites/${honest[0]!.siteId}/revoke`, {
          token: created.token as string,
          body: { reason: 'hostile' },
        }),
      );
    },
  },
  {
    name: 'revoke an honest site with an expired admin token',
    code: 'ADMIN_TOKEN_EXPIRED',
    log,
    act: async ({ h, honest }) =>
      refusal(
        await h.http('POST', `/sites/${honest[0]!.siteId}/revoke`, {
          token: await expiredToken(h),
          body: { reason: 'hostile' },
        }),
      ),
  },
  {
    name: 'cancel the run with a viewer token',
    code: 'ADMIN_FORBIDDEN',
    log,
    act: async ({ h, runId }) =>
      refusal(await h.http('POST', `/runs/${runId}/cancel`, { token: await tokenOf(h, 'viewer') })),
  },
  {
    name: 'revoke an honest site with an operator token',
    code: 'ADMIN_FORBIDDEN',
    log,
    act: async ({ h, honest }) =>
      refusal(
        await h.http('POST', `/sites/${honest[1]!.siteId}/revoke`, {
          token: await tokenOf(h, 'operator'),
          body: { reason: 'hostile' },
        }),
      ),
  },
  {
    name: 'an operator mints itself an admin token',
    code: 'ADMIN_FORBIDDEN',
    log,
    act: async ({ h }) =>
      refusal(
        await h.http('POST', '/admin-tokens', {
          token: await tokenOf(h, 'operator'),
          body: { name: 'escalate', role: 'admin' },
        }),
      ),
  },
  {
    name: 'malformed JSON body',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log,
    act: async ({ h, runId }) =>
      refusal(await h.http('POST', `/runs/${runId}/cancel`, { raw: '{"reason":' })),
  },
  {
    name: 'body over the 1 MB limit',
    code: 'PROTOCOL_MESSAGE_TOO_LARGE',
    log,
    act: async ({ h }) =>
      refusal(await h.http('POST', '/runs', { raw: `{"name":"${'x'.repeat(2 * 1024 * 1024)}"}` })),
  },
  {
    name: 'run config that violates its schema',
    code: 'RUN_CONFIG_INVALID',
    log,
    act: async ({ h }) =>
      refusal(
        await h.http('POST', '/runs', { body: { name: 'x', rounds: -1, minSites: 1e9, model: 'evil' } }),
      ),
  },
  {
    name: 'model weights by a version name with an encoded path traversal',
    code: 'MODEL_VERSION_NOT_FOUND',
    log,
    act: async ({ h }) => refusal(await h.http('GET', '/models/..%2F..%2Fkeys%2Fcoordinator/weights')),
  },
  {
    name: 'site revoke by an id with an encoded path traversal',
    code: 'SITE_NOT_FOUND',
    log,
    act: async ({ h }) =>
      refusal(await h.http('POST', '/sites/..%2F..%2Fadmin-tokens/revoke', { body: { reason: 'hostile' } })),
  },
  {
    name: 'enrollment with a forged token, claiming an honest site',
    code: 'ENROLLMENT_TOKEN_INVALID',
    log,
    act: async ({ h, m }) =>
      refusal(
        await h.http('POST', '/enroll', {
          token: null,
          body: {
            token: `fse_${'B'.repeat(43)}`,
            signingPublicKey: Buffer.from(m.agent.keys.signing.publicKey).toString('base64'),
            boxPublicKey: Buffer.from(m.agent.keys.box.publicKey).toString('base64'),
            agentVersion: 'hostile',
            protocolVersion: 1,
          },
        }),
      ),
  },
];

describeHostileTable('hostile admin API calls during a round (real coordinator)', CASES);
