import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initSharedWeights, tinyModelConfig } from '@fedssl/shared/model';
import { ModelStoreService } from '../models/model-store.service';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';
import { runAdminCli } from './admin-cli';

/**
 * fedssl-admin against a coordinator of a later release, whose answers carry fields this CLI
 * does not know: a fetch that adds them to every JSON object of the real coordinator's answers
 * (outside the signed manifest, whose signature covers it). The commands must work as against
 * their own release, and still refuse an answer missing a field they use.
 */
describe('fedssl-admin reads answers with fields added by a newer coordinator', () => {
  let c: TestCoordinator;
  let token: string;

  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-cli-answers-' });
    token = await c.token('admin', 'cli');
    const model = { ...tinyModelConfig(32), norm: 'group' as const };
    c.app.get(ModelStoreService).publish({
      version: 'v.r1',
      runId: null,
      round: 1,
      model,
      weights: initSharedWeights(model, 3),
      parentVersion: null,
      parentSha256: null,
      sites: [{ siteId: 'site-a', exampleCount: 4 }],
      strategy: 'fedavg',
    });
  });
  afterAll(async () => c?.close());

  /** Adds `added*` fields to every object of a JSON answer, except inside `manifest`. */
  function widen(v: unknown): unknown {
    if (Array.isArray(v)) return v.map(widen);
    if (v === null || typeof v !== 'object') return v;
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = k === 'manifest' ? x : widen(x);
    return { ...o, addedInNextRelease: { nested: [1, 2] }, addedFlag: true };
  }
  const answering =
    (edit: (path: string, body: unknown) => unknown): typeof fetch =>
    async (input, init) => {
      const res = await fetch(input, init);
      if (!res.headers.get('content-type')?.startsWith('application/json')) return res;
      const path = new URL(String(input)).pathname.replace('/api/v1', '');
      const body = JSON.stringify(edit(path, await res.json()));
      return new Response(body, { status: res.status, headers: { 'content-type': 'application/json' } });
    };
  const cli = async (f: typeof fetch, ...argv: string[]) => {
    let out = '';
    let err = '';
    const code = await runAdminCli(argv, {
      io: { stdout: (t) => void (out += t), stderr: (t) => void (err += t) },
      env: { FEDSSL_URL: c.url, FEDSSL_ADMIN_TOKEN: token },
      fetch: f,
    });
    return { code, out, err };
  };

  it('pulls and verifies a model (keys, model list and detail all carry extra fields)', async () => {
    const out = join(c.dataDir, 'pulled');
    const r = await cli(
      answering((_p, b) => widen(b)),
      '--json',
      'models',
      'pull',
      '--version',
      'latest',
      '--out',
      out,
    );
    expect(r.err).toMatch(/^warning: coordinator key not pinned/);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ version: 'v.r1', format: 'fsw' });
    expect(readdirSync(out)).toContain('manifest.json');
  });

  it('lists models and shows the coordinator keys', async () => {
    const f = answering((_p, b) => widen(b));
    const list = await cli(f, 'models', 'list');
    expect([list.code, list.err]).toEqual([0, '']);
    expect(list.out).toContain('v.r1');
    const keys = await cli(f, 'keys', 'show');
    expect([keys.code, keys.err]).toEqual([0, '']);
  });

  it('still refuses an answer missing a field it uses, naming the field', async () => {
    const f = answering((p, b) =>
      p === '/coordinator/keys' ? { ...(b as object), boxPublicKey: undefined } : b,
    );
    const r = await cli(f, 'models', 'pull', '--version', 'v.r1', '--out', join(c.dataDir, 'refused'));
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `error: PROTOCOL_INVALID_MESSAGE: unexpected answer to GET /coordinator/keys from ${c.url}: boxPublicKey: Invalid input: expected string, received undefined (is the coordinator a fedssl coordinator of a compatible release?)\n`,
    );
  });
});
