import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { coordinatorUnreachable, describeFetchFailure } from './fetch-failure';

/** Node's fetch failure for `url` (it rejects with `fetch failed` and the reason in `cause`). */
async function failureOf(url: string, init?: RequestInit): Promise<unknown> {
  try {
    await fetch(url, init);
  } catch (e) {
    return e;
  }
  throw new Error(`${url} answered`);
}

describe('describeFetchFailure', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });
  const listen = async (handler: Parameters<typeof createServer>[1] = () => undefined) => {
    const s = createServer(handler);
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };

  it('names a refused connection and says to check the port (a real fetch to a closed port)', async () => {
    const url = await listen();
    await new Promise((r) => servers.pop()!.close(r));
    const e = await failureOf(`${url}/api/v1/healthz`);
    expect((e as Error).message).toBe('fetch failed');
    const host = new URL(url).host;
    expect(describeFetchFailure(e, url)).toEqual({
      reason: `connection refused by ${host} (ECONNREFUSED)`,
      fix: 'check the port in the coordinator URL, and ask the consortium admin whether the coordinator is running',
    });
    expect(coordinatorUnreachable(url, e).message).toBe(
      `cannot reach ${url}: connection refused by ${host} (ECONNREFUSED); check the port in the coordinator URL, and ask the consortium admin whether the coordinator is running`,
    );
  });

  it('names a coordinator that accepts but never answers in time (a real timeout)', async () => {
    const url = await listen(() => undefined);
    const e = await failureOf(url, { signal: AbortSignal.timeout(50) });
    expect(describeFetchFailure(e, url)).toEqual({
      reason: 'no answer in time',
      fix: `a firewall or proxy may drop the traffic: allow outbound connections from this host to ${new URL(url).host}`,
    });
  });

  it('names DNS and TLS causes by their code', () => {
    const failed = (code: string) => Object.assign(new TypeError('fetch failed'), { cause: { code } });
    const url = 'https://coord.example.org';
    expect(describeFetchFailure(failed('ENOTFOUND'), url).reason).toBe(
      'host name coord.example.org not found (ENOTFOUND)',
    );
    expect(describeFetchFailure(failed('SELF_SIGNED_CERT_IN_CHAIN'), url)).toEqual({
      reason: "the coordinator's TLS certificate is not trusted here (SELF_SIGNED_CERT_IN_CHAIN)",
      fix: 'if a private CA or a TLS-inspecting proxy signs it, give that CA to Node: NODE_EXTRA_CA_CERTS=/path/ca.pem',
    });
    expect(describeFetchFailure(failed('CERT_HAS_EXPIRED'), url).reason).toBe(
      "the coordinator's TLS certificate has expired (CERT_HAS_EXPIRED)",
    );
    // An unknown cause keeps its own words.
    expect(describeFetchFailure(failed('EHOSTUNREACH'), url).reason).toBe('EHOSTUNREACH');
    expect(describeFetchFailure(new Error('boom'), url).reason).toBe('boom');
  });
});
