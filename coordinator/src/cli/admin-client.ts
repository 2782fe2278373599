import type { ZodType } from 'zod';
import { CliError } from './io';

/** Where and as whom the admin CLI talks to the coordinator. */
export interface AdminClientOptions {
  url: string;
  token?: string;
  /** Injectable for tests; defaults to global fetch. */
  fetch?: typeof fetch;
}

/**
 * The coordinator's base URL from `--url` / FEDSSL_URL: an http(s) URL, without trailing
 * slashes or the `/api/v1` an admin may have copied from an API address.
 * @throws CliError INVALID_ARGUMENT when it is not an http:// or https:// URL.
 */
export function coordinatorBase(url: string): string {
  const base = url
    .trim()
    .replace(/\/+$/, '')
    .replace(/\/api\/v1$/, '');
  let parsed: URL | undefined;
  try {
    parsed = new URL(base);
  } catch {
    // reported below
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || !parsed.host)
    throw new CliError(
      'INVALID_ARGUMENT',
      `--url (or FEDSSL_URL) must be the coordinator's http:// or https:// address, e.g. https://coordinator.example.org; got ${JSON.stringify(url.slice(0, 200))}`,
    );
  return base;
}

/**
 * Minimal client of the coordinator REST API (`/api/v1`). HTTP errors become a
 * {@link CliError} carrying the server's `{ error: { code, message } }`.
 */
export class AdminClient {
  private readonly base: string;
  private readonly doFetch: typeof fetch;

  constructor(private readonly opts: AdminClientOptions) {
    this.base = `${coordinatorBase(opts.url)}/api/v1`;
    this.doFetch = opts.fetch ?? fetch;
  }

  async get<T>(path: string): Promise<T> {
    return (await this.request('GET', path)).json() as Promise<T>;
  }

  /**
   * GET, then checks the answer against `schema` (the fields the caller uses; see responses.ts).
   * @throws CliError PROTOCOL_INVALID_MESSAGE naming the path and the first fields that do not fit.
   */
  async getChecked<T>(path: string, schema: ZodType<T>): Promise<T> {
    const body: unknown = await this.get(path);
    const r = schema.safeParse(body);
    if (r.success) return r.data;
    const what = r.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.map(String).join('.') || '(body)'}: ${i.message}`)
      .join('; ');
    throw new CliError(
      'PROTOCOL_INVALID_MESSAGE',
      `unexpected answer to GET ${path} from ${this.opts.url}: ${what} (is the coordinator a fedssl coordinator of a compatible release?)`,
    );
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return (await this.request('POST', path, body)).json() as Promise<T>;
  }

  async getBytes(path: string): Promise<Uint8Array> {
    return new Uint8Array(await (await this.request('GET', path)).arrayBuffer());
  }

  private async request(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) headers['authorization'] = `Bearer ${this.opts.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await this.doFetch(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      // An https:// URL on a port that answers plain HTTP: the TLS handshake reads an HTTP reply.
      const hint =
        cause?.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || cause?.code === 'EPROTO'
          ? ' (this port does not speak TLS: use http://, or the address of the TLS proxy in front)'
          : '';
      throw new CliError(
        'COORDINATOR_UNREACHABLE',
        `cannot reach ${this.opts.url}: ${cause?.code ?? cause?.message ?? (e as Error).message}${hint}`,
      );
    }
    if (!res.ok) {
      let code = `HTTP_${res.status}`;
      let message = res.statusText;
      try {
        const err = ((await res.json()) as { error?: { code?: unknown; message?: unknown } }).error;
        if (typeof err?.code === 'string') code = err.code;
        if (typeof err?.message === 'string') message = err.message;
      } catch {
        // Not our JSON error body (a proxy page?): status line is all we can say.
      }
      // The server's words are about HTTP headers; the CLI user needs the flag or variable.
      if (code === 'ADMIN_UNAUTHORIZED' && !this.opts.token)
        message =
          'no admin token given: pass --token <admin token> or set FEDSSL_ADMIN_TOKEN (an admin creates one with `fedssl-admin admin-tokens create`, the first with `fedssl-coordinator bootstrap-admin`)';
      throw new CliError(code, `${message} (HTTP ${res.status} ${method} ${path})`);
    }
    return res;
  }
}
