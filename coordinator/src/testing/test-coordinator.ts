import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { AdminRole } from '../admin/admin-token.repository';
import { AdminTokenService } from '../admin/admin-token.service';
import type { CoordinatorConfig } from '../config/config';
import type { CoreOptions } from '../core.module';
import { startCoordinator, type RunningCoordinator } from '../main';
import { RestClient } from './rest-client';

/** How {@link startTestCoordinator} differs from its defaults. */
export interface TestCoordinatorOptions {
  /** Prefix of the temp data dir (names the suite in /tmp). */
  prefix: string;
  /** Over `{ host: 127.0.0.1, port: 0, dataDir: <temp>, databaseUrl: null (SQLite), logLevel: 'silent' }`. */
  config?: Partial<CoordinatorConfig>;
  /** Default: a silent pino logger. */
  logger?: Logger;
  core?: CoreOptions;
}

/** A whole coordinator (REST + socket.io) listening on 127.0.0.1:0 in its own temp data dir. */
export interface TestCoordinator extends RunningCoordinator {
  dataDir: string;
  /** Creates an admin token with `role` and returns its secret. */
  token(role: AdminRole, name?: string): Promise<string>;
  /** A REST client for `/api/v1` that sends `token` (none by default). */
  rest(token?: string | null): RestClient;
  /** Closes the coordinator, then removes its data dir. */
  close(): Promise<void>;
}

/**
 * Starts the coordinator's whole Nest app in process, the way the HTTP and socket tests need it.
 * @example
 * const c = await startTestCoordinator({ prefix: 'fedssl-runs-http-' });
 * const operator = c.rest(await c.token('operator'));
 * afterAll(() => c.close());
 */
export async function startTestCoordinator(opts: TestCoordinatorOptions): Promise<TestCoordinator> {
  const dataDir = mkdtempSync(join(tmpdir(), opts.prefix));
  let running: RunningCoordinator;
  try {
    running = await startCoordinator(
      { host: '127.0.0.1', port: 0, dataDir, databaseUrl: null, logLevel: 'silent', ...opts.config },
      opts.logger ?? pino({ level: 'silent' }),
      opts.core,
    );
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  return {
    ...running,
    dataDir,
    token: async (role, name = role) => (await running.app.get(AdminTokenService).create(name, role)).token,
    rest: (token = null) => new RestClient(`${running.url}/api/v1`, token),
    close: async () => {
      try {
        await running.close();
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}
