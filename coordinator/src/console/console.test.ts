import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io, type Socket } from 'socket.io-client';
import { generatePartyKeys } from '@fedssl/shared/crypto';
import { enrollRequest } from '../testing/enrollment';
import type { RestClient } from '../testing/rest-client';
import { SocketAgents } from '../testing/socket-agents';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';
import { CONSOLE_NAMESPACE } from './console.gateway';
import { CONSOLE_CSP } from './console-static';

const RUN = {
  name: 'console-events',
  rounds: 1,
  minSites: 1,
  roundDeadlineSeconds: 600,
  strategy: 'fedavg',
  seed: 1,
  model: {
    arch: 'tiny',
    inputSize: 16,
    widths: [4, 4, 4],
    projectorHidden: 8,
    projectionDim: 4,
    metadataHidden: 4,
  },
  training: {},
};

describe('web console: static files and the /console live namespace', () => {
  let c: TestCoordinator;
  let api: RestClient;
  let agents: SocketAgents;
  let viewer: string;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-console-' });
    api = c.rest(await c.token('admin', 'console-admin'));
    agents = new SocketAgents(c.url, api);
    viewer = await c.token('viewer', 'console-viewer');
  });
  afterAll(async () => {
    for (const s of sockets) s.close();
    agents?.closeAll();
    await c?.close();
  });

  const rest = <T>(method: string, route: string, body?: unknown): Promise<T> => api.ok(method, route, body);

  function consoleSocket(auth: Record<string, unknown>): Socket {
    const s = io(`${c.url}${CONSOLE_NAMESPACE}`, { auth, transports: ['websocket'], reconnection: false });
    sockets.push(s);
    return s;
  }

  const connected = (s: Socket) =>
    new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('connect_error', reject);
    });
  const refused = (s: Socket) =>
    new Promise<string>((resolve, reject) => {
      s.once('connect', () => reject(new Error('connected without a valid token')));
      s.once('connect_error', (e) => resolve(e.message));
    });
  const next = <T>(s: Socket, event: string, match: (p: T) => boolean = () => true) =>
    new Promise<T>((resolve) => {
      const on = (p: T) => {
        if (!match(p)) return;
        s.off(event, on);
        resolve(p);
      };
      s.on(event, on);
    });

  it('serves the console with a Content-Security-Policy and security headers', async () => {
    const res = await fetch(`${c.url}/console/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toBe(CONSOLE_CSP);
    expect(CONSOLE_CSP).toContain("script-src 'self'");
    expect(CONSOLE_CSP).not.toContain('unsafe-inline');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await res.text();
    expect(html).toContain('<script src="console.js" defer></script>');
    expect(html).not.toMatch(/<script>(?!<\/script>)/);

    const js = await fetch(`${c.url}/console/console.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const sio = await fetch(`${c.url}/console/vendor/socket.io.min.js`);
    expect(sio.status).toBe(200);
    expect((await sio.text()).length).toBeGreaterThan(10_000);
  });

  it('redirects /console to /console/ and serves nothing outside its own files', async () => {
    const res = await fetch(`${c.url}/console`, { redirect: 'manual' });
    expect(res.status).toBe(301);
    expect(res.headers.get('location')).toBe('/console/');
    for (const p of ['/console/nope.js', '/console/%2e%2e/package.json', '/console/console.test.ts']) {
      const r = await fetch(`${c.url}${p}`);
      expect(r.status, p).toBe(404);
    }
    const post = await fetch(`${c.url}/console/`, { method: 'POST' });
    expect(post.status).toBe(404);
    // The API is untouched by the console mount.
    expect((await fetch(`${c.url}/api/v1/healthz`)).status).toBe(200);
  });

  it('refuses a console socket without a token or with an unknown one, with the API message', async () => {
    expect(await refused(consoleSocket({}))).toBe(
      'missing admin token: pass it as auth.token in the handshake',
    );
    expect(await refused(consoleSocket({ token: 'fsa_not-a-token' }))).toBe('invalid or revoked admin token');
  });

  it('pushes run and round transitions to a signed-in viewer', async () => {
    const s = consoleSocket({ token: viewer });
    await connected(s);
    const run = await rest<{ id: string }>('POST', '/runs', RUN);
    const running = next<{ runId: string; state: string }>(s, 'run:state', (p) => p.runId === run.id);
    const opened = next<{ runId: string; round: number; state: string }>(
      s,
      'round:state',
      (p) => p.runId === run.id,
    );
    await rest('POST', `/runs/${run.id}/start`);
    expect(await running).toEqual({ runId: run.id, state: 'running' });
    expect(await opened).toEqual({ runId: run.id, round: 1, attempt: 1, state: 'open' });
  });

  it('pushes a site going online, offline and being revoked', async () => {
    const s = consoleSocket({ token: viewer });
    await connected(s);
    const issued = await rest<{ token: string; siteId: string }>('POST', '/enrollment-tokens', {
      siteName: 'console-site',
    });
    const party = generatePartyKeys();
    const enrolled = await api.call('POST', '/enroll', {
      body: enrollRequest(issued.token, party, 't'),
      token: null,
    });
    expect(enrolled.status).toBe(200);

    const online = next<{ siteId: string }>(s, 'site:online', (p) => p.siteId === issued.siteId);
    agents.connect(issued.siteId, party);
    expect(await online).toEqual({ siteId: issued.siteId });

    const revoked = next<{ siteId: string }>(s, 'site:revoked', (p) => p.siteId === issued.siteId);
    const offline = next<{ siteId: string }>(s, 'site:offline', (p) => p.siteId === issued.siteId);
    await rest('POST', `/sites/${issued.siteId}/revoke`, { reason: 'test' });
    expect(await revoked).toEqual({ siteId: issued.siteId });
    expect(await offline).toEqual({ siteId: issued.siteId });
  });
});
