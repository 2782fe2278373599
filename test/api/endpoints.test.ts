import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePartyKeys, keyId, signSiteKeyRotation, toBase64 } from '@fedssl/shared/crypto';
import { modelConfigSchema } from '@fedssl/shared/model';
import { AdminTokenService } from '../../coordinator/src/admin/admin-token.service';
import { ModelStoreService } from '../../coordinator/src/models/model-store.service';
import { OPENAPI_JSON_PATH } from '../../coordinator/src/ops/openapi';
import { enrollRequest } from '../../coordinator/src/testing/enrollment';
import { RestClient } from '../../coordinator/src/testing/rest-client';
import { startTestCoordinator, type TestCoordinator } from '../../coordinator/src/testing/test-coordinator';
import { checkJsonSchema, type Schema } from './json-schema-check';

/**
 * Every REST route, table-driven, against a real coordinator on 127.0.0.1 (SQLite): no token →
 * 401, a weaker role → 403, bad input → 400, an unknown id → 404 (each with the exact error
 * body), and success with the right role. The route list comes from the OpenAPI document the
 * server builds from its router, so a new route without a row here fails the first test.
 */

type Role = 'viewer' | 'operator' | 'admin';
type Method = 'GET' | 'POST';
interface Req {
  path: string;
  body?: unknown;
  /** Sent as is with content-type application/json (malformed JSON). */
  raw?: string;
  token?: string;
}
interface ErrorCase extends Req {
  status: number;
  code: string;
  message: string;
  details?: Record<string, unknown>;
}
interface Row {
  /** `METHOD /path/{param}` as in the OpenAPI document. */
  route: string;
  /** `public` = no token needed; else the weakest role allowed. */
  role: 'public' | Role;
  /** A request that succeeds with the `role`'s token (built when the row runs: fixtures may be made). */
  ok: () => Promise<Req & { status: number }>;
  bad?: () => Promise<ErrorCase[]> | ErrorCase[];
  notFound?: () => Promise<ErrorCase> | ErrorCase;
}

const MISSING_TOKEN = 'missing bearer token: send "Authorization: Bearer <admin token>"';
const ROLES: Role[] = ['viewer', 'operator', 'admin'];

let running: TestCoordinator;
interface OpenApiOperation {
  requestBody?: { required?: boolean; content: Record<string, { schema: Schema }> };
  responses: Record<string, { content?: Record<string, { schema: Schema }> }>;
}
let doc: {
  paths: Record<string, Record<string, OpenApiOperation>>;
  components: { schemas: Record<string, Schema> };
};
const operation = (row: Row): OpenApiOperation => {
  const [method, p] = row.route.split(' ') as [string, string];
  return doc.paths[p]![method.toLowerCase()]!;
};
const tokens: Record<Role, string> = { viewer: '', operator: '', admin: '' };

let rest: RestClient;
const call = (method: Method, { path, ...req }: Req) => rest.response(method, path, req);

const api = (p: string) => `/api/v1${p}`;
const err = (
  status: number,
  code: string,
  message: string,
  req: Req,
  details?: Record<string, unknown>,
): ErrorCase => ({ ...req, status, code, message, details });
/** The two "model" 404s: an unknown version, and a version whose weights retention deleted. */
const noVersion = (path: string, body?: unknown) =>
  err(404, 'MODEL_VERSION_NOT_FOUND', 'no published model version nope', { path, body }, { version: 'nope' });
const prunedWeights = (path: string) =>
  err(
    404,
    'MODEL_WEIGHTS_NOT_FOUND',
    'the weights of pruned.r1 were deleted by the retention policy; its signed manifest is kept',
    { path },
    { version: 'pruned.r1' },
  );
const errorBody = (c: ErrorCase) => ({
  error: { code: c.code, message: c.message, ...(c.details ? { details: c.details } : {}) },
});

/** Fixtures made through the API itself. */
async function createRun(name = 'r'): Promise<string> {
  const r = await call('POST', {
    path: api('/runs'),
    token: tokens.operator,
    body: {
      name,
      rounds: 1,
      minSites: 5,
      roundDeadlineSeconds: 60,
      strategy: 'fedavg',
      model: { arch: 'tiny', inputSize: 32 },
      training: {},
      seed: 1,
    },
  });
  expect(r.status).toBe(201);
  return (r.body as { id: string }).id;
}
async function runIn(state: 'created' | 'running' | 'paused'): Promise<string> {
  const id = await createRun(state);
  if (state === 'created') return id;
  expect((await call('POST', { path: api(`/runs/${id}/start`), token: tokens.operator })).status).toBe(200);
  if (state === 'paused')
    expect((await call('POST', { path: api(`/runs/${id}/pause`), token: tokens.operator })).status).toBe(200);
  return id;
}
async function issuedToken(): Promise<{ siteId: string; token: string }> {
  const issued = await call('POST', {
    path: api('/enrollment-tokens'),
    token: tokens.admin,
    body: { siteName: `site-${randomBytes(3).toString('hex')}` },
  });
  expect(issued.status).toBe(201);
  return issued.body as { siteId: string; token: string };
}
async function enrolledSite(): Promise<{
  siteId: string;
  keys: ReturnType<typeof generatePartyKeys>;
}> {
  const keys = generatePartyKeys();
  const e = await call('POST', {
    path: api('/enroll'),
    body: enrollBody((await issuedToken()).token, keys),
  });
  expect(e.status).toBe(200);
  return { siteId: (e.body as { siteId: string }).siteId, keys };
}
const enrollBody = (token: string, keys = generatePartyKeys()) => enrollRequest(token, keys, 'test');
function rotation(siteId: string, previous: ReturnType<typeof generatePartyKeys>) {
  const next = generatePartyKeys();
  return signSiteKeyRotation(
    {
      siteId,
      previousKeyId: keyId(previous.signing.publicKey),
      signingPublicKey: toBase64(next.signing.publicKey),
      boxPublicKey: toBase64(next.box.publicKey),
      issuedAt: new Date().toISOString(),
      nonce: toBase64(randomBytes(32)),
    },
    previous.signing.secretKey,
    next.signing.secretKey,
  );
}

/**
 * `POST /runs/{id}/<action>`: succeeds from `from`, answers 409 with `message` from `wrong`,
 * 404 for an unknown run.
 */
function runControl(
  action: 'start' | 'pause' | 'resume' | 'cancel',
  from: 'created' | 'running' | 'paused',
  wrong: 'running' | 'paused' | 'cancelled',
  message: (id: string) => string,
): Row {
  return {
    route: `POST /api/v1/runs/{id}/${action}`,
    role: 'operator',
    ok: async () => ({ path: api(`/runs/${await runIn(from)}/${action}`), status: 200 }),
    bad: async () => {
      const id = await runIn(wrong === 'cancelled' ? 'running' : wrong);
      if (wrong === 'cancelled')
        await call('POST', { path: api(`/runs/${id}/cancel`), token: tokens.operator });
      return [err(409, 'RUN_INVALID_STATE', message(id), { path: api(`/runs/${id}/${action}`) })];
    },
    notFound: () =>
      err(404, 'RUN_NOT_FOUND', 'run nope does not exist', { path: api(`/runs/nope/${action}`) }),
  };
}

const ROWS: Row[] = [
  {
    route: 'GET /healthz',
    role: 'public',
    ok: async () => ({ path: '/healthz', status: 200 }),
  },
  {
    route: 'GET /readyz',
    role: 'public',
    ok: async () => ({ path: '/readyz', status: 200 }),
  },
  {
    route: 'GET /metrics',
    role: 'viewer',
    ok: async () => ({ path: '/metrics', status: 200 }),
  },
  {
    route: 'GET /api/v1/healthz',
    role: 'public',
    ok: async () => ({ path: api('/healthz'), status: 200 }),
  },
  {
    route: 'GET /api/v1/coordinator/keys',
    role: 'public',
    ok: async () => ({ path: api('/coordinator/keys'), status: 200 }),
  },
  {
    route: 'GET /api/v1/coordinator/keys/chain',
    role: 'public',
    ok: async () => ({ path: api('/coordinator/keys/chain'), status: 200 }),
  },
  {
    route: 'GET /api/v1/coordinator/keys/history',
    role: 'viewer',
    ok: async () => ({ path: api('/coordinator/keys/history'), status: 200 }),
  },
  {
    route: 'POST /api/v1/enroll',
    role: 'public',
    ok: async () => {
      const issued = await call('POST', {
        path: api('/enrollment-tokens'),
        token: tokens.admin,
        body: { siteName: `enroll-${randomBytes(3).toString('hex')}` },
      });
      return {
        path: api('/enroll'),
        body: enrollBody((issued.body as { token: string }).token),
        status: 200,
      };
    },
    bad: () => [
      err(
        400,
        'PROTOCOL_INVALID_MESSAGE',
        'token: Too small: expected string to have >=16 characters; signingPublicKey: Invalid input: expected string, received undefined; boxPublicKey: Invalid input: expected string, received undefined; agentVersion: Invalid input: expected string, received undefined; protocolVersion: Invalid input: expected number, received undefined',
        {
          path: api('/enroll'),
          body: { token: 'short' },
        },
      ),
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'malformed request: Unexpected end of JSON input', {
        path: api('/enroll'),
        raw: '{"token":',
      }),
    ],
    notFound: () =>
      err(
        400,
        'ENROLLMENT_TOKEN_INVALID',
        'enrollment token is not valid; ask the consortium admin for a new one',
        {
          path: api('/enroll'),
          body: enrollBody(`fse_${'A'.repeat(43)}`),
        },
      ),
  },
  {
    route: 'POST /api/v1/enrollment-tokens',
    role: 'admin',
    ok: async () => ({
      path: api('/enrollment-tokens'),
      body: { siteName: `st-${randomBytes(3).toString('hex')}` },
      status: 201,
    }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'expiresInSeconds: Too small: expected number to be >=60', {
        path: api('/enrollment-tokens'),
        body: { siteName: 'x', expiresInSeconds: 1 },
      }),
    ],
  },
  {
    route: 'GET /api/v1/enrollment-tokens',
    role: 'viewer',
    ok: async () => ({ path: api('/enrollment-tokens'), status: 200 }),
  },
  {
    route: 'POST /api/v1/enrollment-tokens/{siteId}/expire',
    role: 'admin',
    ok: async () => ({ path: api(`/enrollment-tokens/${(await issuedToken()).siteId}/expire`), status: 200 }),
    bad: async () => {
      const expired = (await issuedToken()).siteId;
      const once = await call('POST', {
        path: api(`/enrollment-tokens/${expired}/expire`),
        token: tokens.admin,
      });
      expect(once.status).toBe(200);
      const used = (await enrolledSite()).siteId;
      const notPending = (siteId: string) =>
        err(
          409,
          'ENROLLMENT_TOKEN_NOT_PENDING',
          `the enrollment token of site ${siteId} is already used, expired or revoked`,
          { path: api(`/enrollment-tokens/${siteId}/expire`) },
          { siteId },
        );
      return [notPending(expired), notPending(used)];
    },
    notFound: () =>
      err(
        404,
        'ENROLLMENT_TOKEN_NOT_FOUND',
        'no enrollment token for site nope',
        { path: api('/enrollment-tokens/nope/expire') },
        { siteId: 'nope' },
      ),
  },
  {
    route: 'GET /api/v1/sites',
    role: 'viewer',
    ok: async () => ({ path: api('/sites'), status: 200 }),
  },
  {
    route: 'GET /api/v1/sites/{id}/keys',
    role: 'viewer',
    ok: async () => ({ path: api(`/sites/${(await enrolledSite()).siteId}/keys`), status: 200 }),
    notFound: () =>
      err(
        404,
        'SITE_NOT_FOUND',
        'no site with id nope',
        { path: api('/sites/nope/keys') },
        { siteId: 'nope' },
      ),
  },
  {
    route: 'POST /api/v1/sites/{id}/keys/rotate',
    role: 'public',
    ok: async () => {
      const s = await enrolledSite();
      return { path: api(`/sites/${s.siteId}/keys/rotate`), body: rotation(s.siteId, s.keys), status: 200 };
    },
    bad: async () => {
      const s = await enrolledSite();
      const other = rotation(s.siteId, generatePartyKeys());
      return [
        err(
          400,
          'PROTOCOL_INVALID_MESSAGE',
          'rotation: Invalid input: expected object, received undefined; previousKeySignature: Invalid input: expected string, received undefined; newKeySignature: Invalid input: expected string, received undefined',
          {
            path: api(`/sites/${s.siteId}/keys/rotate`),
            body: {},
          },
        ),
        err(400, 'SITE_KEY_ROTATION_INVALID', `rotation is for site ${s.siteId}, not other`, {
          path: api('/sites/other/keys/rotate'),
          body: other,
        }),
      ];
    },
    notFound: () => {
      const r = rotation('nope', generatePartyKeys());
      return err(
        404,
        'SITE_NOT_FOUND',
        'no site with id nope',
        {
          path: api('/sites/nope/keys/rotate'),
          body: r,
        },
        { siteId: 'nope' },
      );
    },
  },
  {
    route: 'POST /api/v1/sites/{id}/revoke',
    role: 'admin',
    ok: async () => ({
      path: api(`/sites/${(await enrolledSite()).siteId}/revoke`),
      body: { reason: 'test' },
      status: 200,
    }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'reason: Too small: expected string to have >=1 characters', {
        path: api('/sites/any/revoke'),
        body: { reason: '' },
      }),
    ],
    notFound: () =>
      err(
        404,
        'SITE_NOT_FOUND',
        'no site with id nope',
        {
          path: api('/sites/nope/revoke'),
          body: { reason: 'x' },
        },
        { siteId: 'nope' },
      ),
  },
  {
    route: 'POST /api/v1/admin-tokens',
    role: 'admin',
    ok: async () => ({ path: api('/admin-tokens'), body: { name: 'n', role: 'viewer' }, status: 201 }),
    bad: () => [
      err(
        400,
        'PROTOCOL_INVALID_MESSAGE',
        'role: Invalid option: expected one of "admin"|"operator"|"viewer"',
        {
          path: api('/admin-tokens'),
          body: { name: 'n', role: 'root' },
        },
      ),
    ],
  },
  {
    route: 'GET /api/v1/admin-tokens',
    role: 'admin',
    ok: async () => ({ path: api('/admin-tokens'), status: 200 }),
  },
  {
    route: 'GET /api/v1/admin-tokens/me',
    role: 'viewer',
    ok: async () => ({ path: api('/admin-tokens/me'), status: 200 }),
  },
  {
    route: 'POST /api/v1/admin-tokens/{id}/revoke',
    role: 'admin',
    ok: async () => {
      const t = await running.app.get(AdminTokenService).create('to-revoke', 'viewer');
      return { path: api(`/admin-tokens/${t.id}/revoke`), status: 200 };
    },
    notFound: () =>
      err(404, 'ADMIN_TOKEN_NOT_FOUND', 'no admin token with id nope', {
        path: api('/admin-tokens/nope/revoke'),
      }),
  },
  {
    route: 'GET /api/v1/audit',
    role: 'viewer',
    ok: async () => ({ path: api('/audit?after=0&limit=5'), status: 200 }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'limit: expected an integer 1–1000', {
        path: api('/audit?limit=0'),
      }),
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'after: expected a non-negative integer', {
        path: api('/audit?after=-1'),
      }),
    ],
  },
  {
    route: 'GET /api/v1/audit/verify',
    role: 'viewer',
    ok: async () => ({ path: api('/audit/verify'), status: 200 }),
  },
  {
    route: 'GET /api/v1/models',
    role: 'viewer',
    ok: async () => ({ path: api('/models'), status: 200 }),
  },
  {
    route: 'GET /api/v1/models/{version}',
    role: 'viewer',
    ok: async () => ({ path: api('/models/fixture.r1'), status: 200 }),
    notFound: () => noVersion(api('/models/nope')),
  },
  {
    route: 'GET /api/v1/models/{version}/weights',
    role: 'viewer',
    ok: async () => ({ path: api('/models/fixture.r1/weights'), status: 200 }),
    bad: () => [prunedWeights(api('/models/pruned.r1/weights'))],
    notFound: () => noVersion(api('/models/nope/weights')),
  },
  {
    route: 'GET /api/v1/models/{version}/download/{format}',
    role: 'viewer',
    ok: async () => ({ path: api('/models/fixture.r1/download/card'), status: 200 }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'format "onnx" is not one of tfjs, safetensors, card', {
        path: api('/models/fixture.r1/download/onnx'),
      }),
      prunedWeights(api('/models/pruned.r1/download/safetensors')),
      err(
        404,
        'MODEL_VERSION_NOT_FOUND',
        'no published model version ../../keys',
        { path: api('/models/..%2F..%2Fkeys/download/card') },
        { version: '../../keys' },
      ),
    ],
    notFound: () => noVersion(api('/models/nope/download/tfjs')),
  },
  {
    route: 'POST /api/v1/models/prune',
    role: 'admin',
    ok: async () => ({ path: api('/models/prune'), body: { retain: 1 }, status: 200 }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'retain: Too small: expected number to be >=1', {
        path: api('/models/prune'),
        body: { retain: 0 },
      }),
      err(
        400,
        'PROTOCOL_INVALID_MESSAGE',
        'no retention configured: set FEDSSL_RETAIN_VERSIONS or pass "retain" (versions to keep per run, ≥ 1)',
        {
          path: api('/models/prune'),
          body: {},
        },
      ),
      err(400, 'PROTOCOL_INVALID_MESSAGE', '(root): Unrecognized key: "apply"', {
        path: api('/models/prune'),
        body: { apply: true },
      }),
    ],
  },
  {
    route: 'POST /api/v1/models/{version}/keep',
    role: 'admin',
    ok: async () => ({ path: api('/models/fixture.r1/keep'), body: { keep: true }, status: 200 }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'keep: Invalid input: expected boolean, received string', {
        path: api('/models/fixture.r1/keep'),
        body: { keep: 'yes' },
      }),
    ],
    notFound: () => noVersion(api('/models/nope/keep'), { keep: true }),
  },
  {
    route: 'POST /api/v1/runs',
    role: 'operator',
    ok: async () => ({
      path: api('/runs'),
      body: {
        name: 'ok',
        rounds: 1,
        minSites: 1,
        roundDeadlineSeconds: 60,
        strategy: 'fedavg',
        model: { arch: 'tiny', inputSize: 32 },
        training: {},
        seed: 0,
      },
      status: 201,
    }),
    bad: () => [
      err(400, 'RUN_CONFIG_INVALID', 'rounds: Too small: expected number to be >=1', {
        path: api('/runs'),
        body: {
          name: 'bad',
          rounds: 0,
          minSites: 1,
          roundDeadlineSeconds: 60,
          strategy: 'fedavg',
          model: { arch: 'tiny', inputSize: 32 },
          training: {},
          seed: 0,
        },
      }),
    ],
  },
  {
    route: 'GET /api/v1/runs',
    role: 'viewer',
    ok: async () => ({ path: api('/runs'), status: 200 }),
  },
  {
    route: 'GET /api/v1/runs/{id}',
    role: 'viewer',
    ok: async () => ({ path: api(`/runs/${await createRun()}`), status: 200 }),
    notFound: () => err(404, 'RUN_NOT_FOUND', 'run nope does not exist', { path: api('/runs/nope') }),
  },
  runControl(
    'start',
    'created',
    'running',
    (id) => `run ${id} is running; only a created run can be started`,
  ),
  runControl('pause', 'running', 'paused', (id) => `run ${id} is paused; only a running run can be paused`),
  runControl('resume', 'paused', 'running', (id) => `run ${id} is running; only a paused run can be resumed`),
  runControl(
    'cancel',
    'running',
    'cancelled',
    (id) => `run ${id} is cancelled; only a created, running or paused run can be cancelled`,
  ),
  // Last: it replaces the coordinator keys the other rows' fixtures were signed under.
  {
    route: 'POST /api/v1/coordinator/keys/rotate',
    role: 'admin',
    ok: async () => ({ path: api('/coordinator/keys/rotate'), body: { graceSeconds: 60 }, status: 200 }),
    bad: () => [
      err(400, 'PROTOCOL_INVALID_MESSAGE', 'graceSeconds: Too small: expected number to be >=0', {
        path: api('/coordinator/keys/rotate'),
        body: { graceSeconds: -1 },
      }),
    ],
  },
];

const routeOf = (r: Row) => r.route.split(' ') as [Method, string];

describe('REST API: every route, bad inputs, roles (real server, SQLite)', () => {
  beforeAll(async () => {
    running = await startTestCoordinator({ prefix: 'fedssl-api-' });
    rest = new RestClient(running.url);
    const admins = running.app.get(AdminTokenService);
    for (const role of ROLES) tokens[role] = (await admins.create(role, role)).token;
    const models = running.app.get(ModelStoreService);
    for (const version of ['pruned.r1', 'fixture.r1']) {
      models.publish({
        version,
        runId: null,
        round: 1,
        model: modelConfigSchema.parse({ arch: 'tiny', inputSize: 32 }),
        weights: [{ name: 'w', shape: [2], data: Float32Array.of(1, 2) }],
        parentVersion: null,
        parentSha256: null,
        sites: [],
        strategy: 'fedavg',
      });
    }
    models.deleteWeights('pruned.r1');
    doc = (await call('GET', { path: `/${OPENAPI_JSON_PATH}` })).body as typeof doc;
  });
  afterAll(async () => {
    await running?.close();
  });

  it('has exactly one row per route of the OpenAPI document (derived from the router)', async () => {
    const documented = Object.entries(doc.paths)
      .flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();
    expect(ROWS.map((r) => r.route).sort()).toEqual(documented);
  });

  it("GET /admin-tokens/me answers the caller's own token", async () => {
    for (const role of ROLES) {
      const r = await call('GET', { path: api('/admin-tokens/me'), token: tokens[role] });
      expect(r.body).toMatchObject({ name: role, role, revokedAt: null, expiresAt: null });
    }
  });

  it('documents every operation: a JSON request body exactly where it takes one, and its success responses', async () => {
    for (const row of ROWS) {
      const op = operation(row);
      const req = await row.ok();
      const takesBody = req.body !== undefined;
      expect([row.route, op.requestBody?.content['application/json']?.schema !== undefined]).toEqual([
        row.route,
        takesBody,
      ]);
      // Optional only where the handler accepts no body (prune: a dry run with the defaults).
      if (op.requestBody)
        expect([row.route, op.requestBody.required]).toEqual([
          row.route,
          !['POST /api/v1/models/prune', 'POST /api/v1/coordinator/keys/rotate'].includes(row.route),
        ]);
      const success = Object.entries(op.responses).filter(([status]) => /^2\d\d$/.test(status));
      expect([row.route, success.map(([status]) => Number(status)).includes(req.status)]).toEqual([
        row.route,
        true,
      ]);
      for (const [, r] of success) {
        const schemas = Object.values(r.content ?? {}).map((c) => c.schema);
        expect([row.route, schemas.length > 0 && schemas.every((x) => x !== undefined)]).toEqual([
          row.route,
          true,
        ]);
      }
      expect(op.responses['default']?.content?.['application/json']?.schema).toEqual({
        $ref: '#/components/schemas/Error',
      });
    }
  });

  for (const row of ROWS) {
    const [method] = routeOf(row);
    describe(row.route, () => {
      if (row.role !== 'public') {
        const role = row.role;
        it(`401 without a token or with an unknown one; 403 below ${role}`, async () => {
          const req = await row.ok();
          const none = await call(method, { ...req, token: undefined });
          expect([none.status, none.body]).toEqual([
            401,
            { error: { code: 'ADMIN_UNAUTHORIZED', message: MISSING_TOKEN } },
          ]);
          const unknown = await call(method, { ...req, token: `fsa_${'x'.repeat(40)}` });
          expect([unknown.status, unknown.body]).toEqual([
            401,
            { error: { code: 'ADMIN_UNAUTHORIZED', message: 'invalid or revoked admin token' } },
          ]);
          for (const weaker of ROLES.slice(0, ROLES.indexOf(role))) {
            const r = await call(method, { ...req, token: tokens[weaker] });
            expect([r.status, r.body]).toEqual([
              403,
              {
                error: {
                  code: 'ADMIN_FORBIDDEN',
                  message: `role ${weaker} may not do this; requires ${role} or higher`,
                },
              },
            ]);
          }
        });
      }
      if (row.bad) {
        it('rejects bad input with the exact error', async () => {
          for (const c of await row.bad!()) {
            const r = await call(method, {
              ...c,
              token: row.role === 'public' ? undefined : tokens[row.role],
            });
            expect([c.path, r.status, r.body]).toEqual([c.path, c.status, errorBody(c)]);
          }
        });
      }
      if (row.notFound) {
        it('answers an unknown id with the exact error', async () => {
          const c = await row.notFound!();
          const r = await call(method, { ...c, token: row.role === 'public' ? undefined : tokens[row.role] });
          expect([r.status, r.body]).toEqual([c.status, errorBody(c)]);
        });
      }
      it(`succeeds with ${row.role === 'public' ? 'no token' : `a ${row.role} token`}`, async () => {
        const req = await row.ok();
        const r = await call(method, { ...req, token: row.role === 'public' ? undefined : tokens[row.role] });
        expect([r.status, r.status < 400 ? 'ok' : r.body]).toEqual([req.status, 'ok']);
        // The body is what the OpenAPI document says it is.
        const documented = operation(row).responses[String(req.status)]!.content!;
        const mediaType = Object.keys(documented).find((t) => r.type?.startsWith(t));
        expect([row.route, r.type, mediaType !== undefined]).toEqual([row.route, r.type, true]);
        if (mediaType === 'application/json') {
          const { schema } = documented[mediaType]!;
          expect([row.route, checkJsonSchema(r.body, schema, doc.components.schemas)]).toEqual([
            row.route,
            [],
          ]);
        }
      });
    });
  }
});
