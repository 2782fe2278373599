/**
 * Test support: a small client for the coordinator's REST API over real HTTP, shared by the
 * coordinator's own HTTP tests and the cross-package suites in `test/`.
 */

/** One request. `token: null` sends no Authorization header; absent: the client's default token. */
export interface RestRequest {
  body?: unknown;
  /** Sent as is, with content-type application/json (malformed JSON, oversized bodies). */
  raw?: string;
  token?: string | null;
  /** Extra headers, applied last (they may replace the ones above). */
  headers?: Record<string, string>;
}

/** What came back: the body as JSON when the server says it is JSON (and sent one), else as text. */
export interface RestResponse {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- assertions walk arbitrary response JSON
  body: any;
  /** The content-type header. */
  type: string | null;
  headers: Headers;
  /** Size of the body in bytes. */
  bytes: number;
}

/**
 * Requests against `baseUrl` (e.g. `${url}/api/v1`), with `token` as the bearer token unless a
 * request names its own. A JSON content type is sent exactly when there is a body.
 * @example
 * const rest = new RestClient(`${c.url}/api/v1`, adminToken);
 * const run = await rest.ok('POST', '/runs', testRunBody());
 * expect(await rest.call('GET', `/runs/${run.id}`, { token: null })).toMatchObject({ status: 401 });
 */
export class RestClient {
  constructor(
    readonly baseUrl: string,
    public token: string | null = null,
  ) {}

  /** The whole response: status, decoded body, content type, headers and size. */
  async response(method: string, path: string, req: RestRequest = {}): Promise<RestResponse> {
    const token = req.token === undefined ? this.token : req.token;
    const hasBody = req.body !== undefined || req.raw !== undefined;
    const res = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: {
        ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
        ...(hasBody ? { 'content-type': 'application/json' } : {}),
        ...req.headers,
      },
      body: req.raw ?? (req.body === undefined ? undefined : JSON.stringify(req.body)),
    });
    const buf = Buffer.from(await res.arrayBuffer());
    const type = res.headers.get('content-type');
    const text = buf.toString('utf8');
    const body: unknown = type?.includes('json') && buf.length > 0 ? JSON.parse(text) : text;
    return { status: res.status, body, type, headers: res.headers, bytes: buf.length };
  }

  /** Status and decoded body only (what most assertions compare with `toEqual`). */
  async call(
    method: string,
    path: string,
    req: RestRequest = {},
  ): Promise<Pick<RestResponse, 'status' | 'body'>> {
    const { status, body } = await this.response(method, path, req);
    return { status, body };
  }

  /**
   * A request that must succeed (status below 300); resolves with its body.
   * @throws Error naming the method, path, status and body otherwise.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- assertions walk arbitrary response JSON
  async ok(method: string, path: string, body?: unknown, token?: string | null): Promise<any> {
    const r = await this.call(method, path, { body, token });
    if (r.status >= 300) throw new Error(`${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
}
