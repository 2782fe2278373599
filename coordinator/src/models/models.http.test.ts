import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { fromBase64, verifySignedModelManifest } from '@fedssl/shared/crypto';
import { tinyModelConfig } from '@fedssl/shared/model';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { FakeClock } from '../runs/clock';
import { runAdminCliAt } from '../testing/admin-cli';
import type { RestClient } from '../testing/rest-client';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';
import { ModelStoreService } from './model-store.service';

/** `GET /models` and `GET /models/:version` say whether a version's weights were pruned, and when. */
describe('model versions over REST: weightsAvailable and prunedAt (whole coordinator on port 0)', () => {
  const PUBLISHED_AT = '2031-05-01T10:00:00.000Z';
  const PRUNED_AT = '2031-05-02T08:30:00.000Z';
  const clock = new FakeClock(Date.parse(PUBLISHED_AT));
  let c: TestCoordinator;
  let viewer: RestClient;
  let admin: string;

  const publish = (version: string, round: number) =>
    c.app.get(ModelStoreService).publish({
      version,
      runId: null,
      round,
      model: tinyModelConfig(32),
      weights: [{ name: 'w', shape: [3], data: Float32Array.from([round, 2, 3]) }],
      parentVersion: null,
      parentSha256: null,
      sites: [],
      strategy: 'fedavg',
    });
  const availability = async () =>
    (
      (await viewer.ok('GET', '/models')) as {
        manifest: { version: string };
        weightsAvailable: boolean;
        prunedAt: string | null;
      }[]
    ).map((v) => [v.manifest.version, v.weightsAvailable, v.prunedAt]);

  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-models-http-', core: { clock } });
    admin = await c.token('admin');
    viewer = c.rest(await c.token('viewer'));
    for (const [i, v] of ['v0', 'v1', 'v2'].entries()) publish(v, i);
  });
  afterAll(async () => {
    await c?.close();
  });

  it('lists every version as its signed manifest plus weightsAvailable: true and prunedAt: null', async () => {
    const list = await viewer.ok('GET', '/models');
    expect(list.map((v: object) => Object.keys(v).sort())).toEqual(
      Array(3).fill(['keyId', 'manifest', 'prunedAt', 'signature', 'weightsAvailable']),
    );
    expect(await availability()).toEqual([
      ['v0', true, null],
      ['v1', true, null],
      ['v2', true, null],
    ]);
    expect(await viewer.call('GET', '/models/v1')).toMatchObject({
      status: 200,
      body: { manifest: { version: 'v1' }, weightsAvailable: true, prunedAt: null },
    });
  });

  it('after a prune: weightsAvailable false and the time of the prune, in the list, the detail and fedssl-admin models list', async () => {
    clock.advance(Date.parse(PRUNED_AT) - clock.now());
    const pruned = await c.rest(admin).ok('POST', '/models/prune', { dryRun: false, retain: 1 });
    expect(pruned.pruned).toEqual(['v0', 'v1']);
    expect(await availability()).toEqual([
      ['v0', false, PRUNED_AT],
      ['v1', false, PRUNED_AT],
      ['v2', true, null],
    ]);
    const detail = await viewer.ok('GET', '/models/v0');
    expect(detail).toMatchObject({ weightsAvailable: false, prunedAt: PRUNED_AT });
    // The signed part is unchanged by the unsigned fields beside it.
    const key = fromBase64(c.app.get(CoordinatorKeysService).publicKeys().signingPublicKey, 32);
    expect(
      verifySignedModelManifest(
        { manifest: detail.manifest, signature: detail.signature, keyId: detail.keyId },
        key,
      ).version,
    ).toBe('v0');
    // What the flag announces is what a download gets.
    expect((await viewer.call('GET', '/models/v0/weights')).body.error.code).toBe('MODEL_WEIGHTS_NOT_FOUND');
    expect((await viewer.response('GET', '/models/v2/weights')).status).toBe(200);

    const cli = await runAdminCliAt(c.url, admin, ['models', 'list']);
    expect(cli.code).toBe(0);
    expect(cli.out.split('\n').map((l) => l.replace(/^(\S+).*?( {2}weights pruned .*)?$/, '$1$2'))).toEqual([
      `v0  weights pruned ${PRUNED_AT}`,
      `v1  weights pruned ${PRUNED_AT}`,
      'v2',
      '',
    ]);
  });

  it('weights deleted without a recorded prune: weightsAvailable false, prunedAt null', async () => {
    publish('v3', 3);
    c.app.get(ModelStoreService).deleteWeights('v3');
    expect(await viewer.call('GET', '/models/v3')).toMatchObject({
      status: 200,
      body: { weightsAvailable: false, prunedAt: null },
    });
    expect((await runAdminCliAt(c.url, admin, ['models', 'list'])).out).toContain(
      'weights pruned (not recorded)\n',
    );
  });

  it('an unknown version is still a 404 with the exact error', async () => {
    expect(await viewer.call('GET', '/models/nope')).toEqual({
      status: 404,
      body: {
        error: {
          code: 'MODEL_VERSION_NOT_FOUND',
          message: 'no published model version nope',
          details: { version: 'nope' },
        },
      },
    });
  });
});
