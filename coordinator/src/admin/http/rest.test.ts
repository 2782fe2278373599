import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Module, type DynamicModule } from '@nestjs/common';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { sha256Hex } from '@fedssl/shared/crypto';
import { tinyModelConfig } from '@fedssl/shared/model';
import { PROTOCOL_VERSION } from '@fedssl/shared/protocol';
import { loadConfig, type CoordinatorConfig } from '../../config/config';
import { CoreModule } from '../../core.module';
import { KeysModule } from '../../keys/keys.module';
import { ModelStoreService } from '../../models/model-store.service';
import { ModelsModule } from '../../models/models.module';
import { SitesModule } from '../../sites/sites.module';
import { PresenceService } from '../../sites/presence.service';
import { AdminModule } from '../admin.module';
import { AdminTokenService } from '../admin-token.service';
import { enrollRequest } from '../../testing/enrollment';
import { RestClient, type RestRequest } from '../../testing/rest-client';
import { listenNestApp, type RunningCoordinator } from './listen';

@Module({})
class PlatformModule {
  static forRoot(config: CoordinatorConfig, logger: pino.Logger): DynamicModule {
    return {
      module: PlatformModule,
      imports: [CoreModule.forRoot(config, logger), KeysModule, SitesModule, AdminModule, ModelsModule],
    };
  }
}

describe('platform REST API (real HTTP server)', () => {
  let dir: string;
  let running: RunningCoordinator;
  const lines: string[] = [];
  const tokens = { admin: '', operator: '', viewer: '' };

  let rest: RestClient;
  const call = (method: string, path: string, opts: RestRequest = {}) => rest.call(method, path, opts);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fedssl-rest-'));
    const config = loadConfig({ FEDSSL_DATA_DIR: dir, FEDSSL_PORT: '0' });
    const capture = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        cb();
      },
    });
    const logger = pino({ level: 'info' }, capture);
    running = await listenNestApp(PlatformModule.forRoot(config, logger), config, logger);
    rest = new RestClient(`${running.url}/api/v1`);
    const admins = running.app.get(AdminTokenService);
    tokens.admin = (await admins.create('root', 'admin')).token;
    tokens.operator = (await admins.create('ops', 'operator')).token;
    tokens.viewer = (await admins.create('watcher', 'viewer')).token;
  });
  afterAll(async () => {
    await running?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('logs one "coordinator listening" line with the url and port', () => {
    const listening = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'coordinator listening');
    expect(listening).toHaveLength(1);
    expect(listening[0]).toMatchObject({ url: running.url, port: running.port });
    expect(['sodium-native', 'tweetnacl']).toContain(listening[0].bulkCrypto);
    expect(running.port).toBeGreaterThan(0);
  });

  it('serves health and the coordinator keys without a token', async () => {
    expect(await call('GET', '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    const keys = await call('GET', '/coordinator/keys');
    expect(keys.status).toBe(200);
    expect(Object.keys(keys.body).sort()).toEqual([
      'boxPublicKey',
      'fingerprint',
      'keyId',
      'signingPublicKey',
    ]);
  });

  it('answers 401 without or with a bad token, and 403 for weaker roles', async () => {
    expect(await call('GET', '/sites')).toEqual(
      expect.objectContaining({
        status: 401,
        body: {
          error: {
            code: 'ADMIN_UNAUTHORIZED',
            message: 'missing bearer token: send "Authorization: Bearer <admin token>"',
          },
        },
      }),
    );
    expect((await call('GET', '/sites', { token: 'fsa_nope' })).body).toEqual({
      error: { code: 'ADMIN_UNAUTHORIZED', message: 'invalid or revoked admin token' },
    });
    const forbidden = await call('POST', '/enrollment-tokens', {
      token: tokens.viewer,
      body: { siteName: 'X' },
    });
    expect(forbidden).toMatchObject({
      status: 403,
      body: {
        error: { code: 'ADMIN_FORBIDDEN', message: 'role viewer may not do this; requires admin or higher' },
      },
    });
    expect(
      (await call('POST', '/admin-tokens', { token: tokens.operator, body: { name: 'x', role: 'viewer' } }))
        .status,
    ).toBe(403);
    expect((await call('GET', '/sites', { token: tokens.viewer })).status).toBe(200);
    expect((await call('GET', '/models', { token: tokens.operator })).status).toBe(200);
  });

  it('rejects bad bodies with exact messages', async () => {
    const r = await call('POST', '/enrollment-tokens', {
      token: tokens.admin,
      body: { siteName: '', extra: 1 },
    });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      error: {
        code: 'PROTOCOL_INVALID_MESSAGE',
        message:
          'siteName: Too small: expected string to have >=1 characters; (root): Unrecognized key: "extra"',
      },
    });
    const e = await call('POST', '/enroll', { body: { token: 'short' } });
    expect(e.status).toBe(400);
    expect(e.body.error.code).toBe('PROTOCOL_INVALID_MESSAGE');
    expect(e.body.error.message).toBe(
      'token: Too small: expected string to have >=16 characters; ' +
        'signingPublicKey: Invalid input: expected string, received undefined; ' +
        'boxPublicKey: Invalid input: expected string, received undefined; ' +
        'agentVersion: Invalid input: expected string, received undefined; ' +
        'protocolVersion: Invalid input: expected number, received undefined',
    );
    const bad = await call('POST', '/enroll', { raw: '{"token":' });
    expect(bad).toMatchObject({
      status: 400,
      body: {
        error: {
          code: 'PROTOCOL_INVALID_MESSAGE',
          message: 'malformed request: Unexpected end of JSON input',
        },
      },
    });
    expect(await call('GET', '/nope', { token: tokens.admin })).toMatchObject({
      status: 404,
      body: { error: { code: 'NOT_FOUND' } },
    });
  });

  it('issues a token, enrolls a site once, lists and revokes it', async () => {
    const issued = await call('POST', '/enrollment-tokens', {
      token: tokens.admin,
      body: { siteName: 'General Hospital' },
    });
    expect(issued.status).toBe(201);
    expect(Object.keys(issued.body).sort()).toEqual(['expiresAt', 'siteId', 'siteName', 'token']);
    const enrollBody = enrollRequest(issued.body.token);
    const enrolled = await call('POST', '/enroll', { body: enrollBody });
    expect(enrolled.status).toBe(200);
    expect(enrolled.body).toEqual({
      siteId: issued.body.siteId,
      siteName: 'General Hospital',
      coordinator: (await call('GET', '/coordinator/keys')).body,
      protocolVersion: PROTOCOL_VERSION,
    });
    expect(await call('POST', '/enroll', { body: enrollBody })).toMatchObject({
      status: 409,
      body: { error: { code: 'ENROLLMENT_TOKEN_USED' } },
    });
    expect(
      (await call('POST', '/enroll', { body: { ...enrollBody, token: 'fse_' + 'A'.repeat(43) } })).body.error
        .code,
    ).toBe('ENROLLMENT_TOKEN_INVALID');

    running.app.get(PresenceService).markOnline(issued.body.siteId, 'conn-1');
    const sites = await call('GET', '/sites', { token: tokens.viewer });
    expect(sites.body).toEqual([
      expect.objectContaining({
        id: issued.body.siteId,
        status: 'enrolled',
        online: true,
        name: 'General Hospital',
      }),
    ]);
    expect(
      (await call('POST', `/sites/${issued.body.siteId}/revoke`, { token: tokens.admin, body: {} })).body,
    ).toEqual({
      error: {
        code: 'PROTOCOL_INVALID_MESSAGE',
        message: 'reason: Invalid input: expected string, received undefined',
      },
    });
    const revoked = await call('POST', `/sites/${issued.body.siteId}/revoke`, {
      token: tokens.admin,
      body: { reason: 'test' },
    });
    expect(revoked).toMatchObject({ status: 200, body: { status: 'revoked', id: issued.body.siteId } });
    expect(
      await call('POST', '/sites/site-missing/revoke', { token: tokens.admin, body: { reason: 'x' } }),
    ).toMatchObject({
      status: 404,
      body: { error: { code: 'SITE_NOT_FOUND', message: 'no site with id site-missing' } },
    });
    // Secrets never reach the log.
    expect(lines.join('\n')).not.toContain(issued.body.token);
    expect(lines.join('\n')).not.toContain(tokens.admin);
  });

  it('manages admin tokens; a revoked token stops working', async () => {
    const created = await call('POST', '/admin-tokens', {
      token: tokens.admin,
      body: { name: 'ci', role: 'operator' },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'ci', role: 'operator', revokedAt: null });
    expect((await call('GET', '/sites', { token: created.body.token })).status).toBe(200);
    const list = await call('GET', '/admin-tokens', { token: tokens.admin });
    // Listed by creation time; tokens created in the same millisecond tie-break on their random id.
    const names: string[] = list.body.map((t: { name: string }) => t.name);
    expect([...names].sort()).toEqual(['ci', 'ops', 'root', 'watcher']);
    expect(names.at(-1)).toBe('ci');
    expect(JSON.stringify(list.body)).not.toContain('token_hash');
    expect(
      (await call('POST', `/admin-tokens/${created.body.id}/revoke`, { token: tokens.admin })).body.revokedAt,
    ).not.toBeNull();
    expect((await call('GET', '/sites', { token: created.body.token })).status).toBe(401);
    expect(
      (await call('POST', '/admin-tokens/adm-nope/revoke', { token: tokens.admin })).body.error.code,
    ).toBe('ADMIN_TOKEN_NOT_FOUND');
    expect(
      (await call('POST', '/admin-tokens', { token: tokens.admin, body: { name: 'x', role: 'root' } })).body,
    ).toEqual({
      error: {
        code: 'PROTOCOL_INVALID_MESSAGE',
        message: 'role: Invalid option: expected one of "admin"|"operator"|"viewer"',
      },
    });
  });

  it('serves published models: manifest, list and weight bytes', async () => {
    const store = running.app.get(ModelStoreService);
    const signed = store.publish({
      version: 'run-x.r0',
      runId: 'run-x',
      round: 0,
      model: tinyModelConfig(32),
      weights: [{ name: 'w', shape: [4], data: Float32Array.from([1, 2, 3, 4]) }],
      parentVersion: null,
      parentSha256: null,
      sites: [],
      strategy: 'fedavg',
    });
    // The signed manifest, and beside it whether the weights are still there.
    const version = { ...signed, weightsAvailable: true, prunedAt: null };
    expect((await call('GET', '/models/run-x.r0', { token: tokens.viewer })).body).toEqual(version);
    expect((await call('GET', '/models', { token: tokens.viewer })).body).toEqual([version]);
    const res = await fetch(`${rest.baseUrl}/models/run-x.r0/weights`, {
      headers: { authorization: `Bearer ${tokens.viewer}` },
    });
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect(bytes.length).toBe(signed.manifest.weightsBytes);
    expect(sha256Hex(bytes)).toBe(signed.manifest.weightsSha256);
    expect(await call('GET', '/models/nope', { token: tokens.viewer })).toMatchObject({
      status: 404,
      body: { error: { code: 'MODEL_VERSION_NOT_FOUND', message: 'no published model version nope' } },
    });
    expect((await call('GET', '/models/nope/weights', { token: tokens.viewer })).status).toBe(404);
  });
});
