import { join, resolve } from 'node:path';
import type { CoordinatorConfig } from '../config/config';
import { PostgresStore } from './postgres-store';
import type { SqlStore } from './sql-store';
import { SqliteStore } from './sqlite-store';

/**
 * Opens the store the configuration names: PostgreSQL for a `postgres://`/`postgresql://`
 * `FEDSSL_DATABASE_URL` (optional `?schema=name`), SQLite for `sqlite:<file>` (relative to
 * the data dir) or, by default, `<dataDir>/fedssl.sqlite`.
 * @throws FedsslError STORE_UNAVAILABLE when PostgreSQL cannot be reached.
 */
export async function openStore(
  config: Pick<CoordinatorConfig, 'dataDir' | 'databaseUrl'>,
): Promise<SqlStore> {
  const file = sqliteFileFor(config);
  return file === null ? PostgresStore.open({ url: config.databaseUrl! }) : SqliteStore.open(file);
}

/**
 * The SQLite file the configuration names (`sqlite:<file>` relative to the data dir, or
 * `<dataDir>/fedssl.sqlite` by default), or null when it names PostgreSQL.
 */
export function sqliteFileFor(config: Pick<CoordinatorConfig, 'dataDir' | 'databaseUrl'>): string | null {
  const url = config.databaseUrl;
  if (url !== null && /^postgres(ql)?:\/\//.test(url)) return null;
  if (url !== null && url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    return file === ':memory:' ? file : resolve(config.dataDir, file);
  }
  return join(config.dataDir, 'fedssl.sqlite');
}
