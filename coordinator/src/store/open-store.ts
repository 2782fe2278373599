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
  const url = config.databaseUrl;
  if (url !== null && /^postgres(ql)?:\/\//.test(url)) return PostgresStore.open({ url });
  if (url !== null && url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    return SqliteStore.open(file === ':memory:' ? file : resolve(config.dataDir, file));
  }
  return SqliteStore.open(join(config.dataDir, 'fedssl.sqlite'));
}
