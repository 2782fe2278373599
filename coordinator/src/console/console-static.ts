import { existsSync, readFileSync, readdirSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, extname, join } from 'node:path';

/** URL path of the web console. */
export const CONSOLE_PATH = '/console';

/**
 * The console's Content-Security-Policy: only our own script, styles and connections; no
 * inline script, no framing, no plugins. Charts are SVG built with DOM calls, so no
 * `unsafe-inline` is needed; model downloads are `blob:` URLs.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

/**
 * Where the static files are: beside this module when running from sources (vitest), or in
 * `src/console/public` when running from `dist/console` (both are two levels below the
 * package root).
 */
export function consolePublicDir(): string {
  const candidates = [join(__dirname, 'public'), join(__dirname, '..', '..', 'src', 'console', 'public')];
  const found = candidates.find((d) => existsSync(join(d, 'index.html')));
  if (!found) throw new Error(`console files not found; looked in ${candidates.join(', ')}`);
  return found;
}

/** The browser build of socket.io-client: a copy in `public/vendor`, else the installed package. */
function socketIoClientFile(publicDir: string): string | undefined {
  const vendored = join(publicDir, 'vendor', 'socket.io.min.js');
  if (existsSync(vendored)) return vendored;
  try {
    // The package's exports map hides dist/socket.io.min.js; go through package.json.
    const file = join(dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');
    return existsSync(file) ? file : undefined;
  } catch {
    return undefined;
  }
}

interface StaticFile {
  type: string;
  body: Buffer;
}

/** Reads the (few, small) console files once; only these exact names are ever served. */
export function loadConsoleFiles(publicDir: string = consolePublicDir()): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  for (const name of readdirSync(publicDir)) {
    const type = TYPES[extname(name)];
    if (type) files.set(`/${name}`, { type, body: readFileSync(join(publicDir, name)) });
  }
  const sio = socketIoClientFile(publicDir);
  if (sio) files.set('/vendor/socket.io.min.js', { type: TYPES['.js']!, body: readFileSync(sio) });
  return files;
}

type Next = (err?: unknown) => void;

/**
 * Connect-style middleware for {@link CONSOLE_PATH} (mounted with `app.use(CONSOLE_PATH, …)`,
 * so `req.url` is relative to it): GET/HEAD of a known file with security headers;
 * `/console` redirects to `/console/`; anything else falls through (→ 404).
 */
export function consoleMiddleware(
  files: Map<string, StaticFile> = loadConsoleFiles(),
): (req: IncomingMessage & { originalUrl?: string }, res: ServerResponse, next: Next) => void {
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/' && req.originalUrl !== undefined && !req.originalUrl.split('?')[0]!.endsWith('/')) {
      res.statusCode = 301;
      res.setHeader('Location', `${CONSOLE_PATH}/`);
      return void res.end();
    }
    const file = files.get(path === '/' ? '/index.html' : path);
    if (!file) return next();
    res.statusCode = 200;
    res.setHeader('Content-Type', file.type);
    res.setHeader('Content-Length', file.body.length);
    res.setHeader('Content-Security-Policy', CONSOLE_CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cache-Control', 'no-cache');
    res.end(req.method === 'HEAD' ? undefined : file.body);
  };
}
