import BetterSqlite3 from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** Nest injection token for the shared {@link Database}. */
export const DATABASE = Symbol('DATABASE');

/**
 * The coordinator's embedded store: one SQLite file (WAL, foreign keys on).
 *
 * Each component owns its tables and registers its own numbered migrations with
 * {@link Database.migrate}; the `schema_migrations` table records which were applied so a
 * restart never re-runs one. Components never touch each other's tables.
 */
export class Database {
  private constructor(readonly sqlite: BetterSqlite3.Database) {}

  /**
   * Opens (creating if needed) the database file; `':memory:'` gives a private in-memory store.
   *
   * @example
   * const db = Database.open(join(dataDir, 'fedssl.sqlite'));
   * db.migrate('sites', ['CREATE TABLE sites (id TEXT PRIMARY KEY)']);
   */
  static open(file: string): Database {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const sqlite = new BetterSqlite3(file);
    // WAL lets readers (REST) proceed while the round engine writes; NORMAL sync is safe with WAL.
    if (file !== ':memory:') sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      component TEXT NOT NULL,
      version INTEGER NOT NULL,
      applied_at TEXT NOT NULL,
      PRIMARY KEY (component, version)
    )`);
    return new Database(sqlite);
  }

  /**
   * Applies the component's migrations that have not been applied yet, in order, each in
   * its own transaction together with its `schema_migrations` row. Migration `i` (0-based)
   * is version `i + 1`; never edit or reorder a shipped migration, only append.
   */
  migrate(component: string, migrations: readonly string[]): void {
    const row = this.sqlite
      .prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE component = ?')
      .get(component) as { v: number };
    const insert = this.sqlite.prepare(
      'INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)',
    );
    for (let i = row.v; i < migrations.length; i++) {
      const sql = migrations[i] as string;
      this.transaction(() => {
        this.sqlite.exec(sql);
        insert.run(component, i + 1, new Date().toISOString());
      });
    }
  }

  /** Versions applied for a component, ascending (for diagnostics and tests). */
  appliedVersions(component: string): number[] {
    return (
      this.sqlite
        .prepare('SELECT version FROM schema_migrations WHERE component = ? ORDER BY version')
        .all(component) as { version: number }[]
    ).map((r) => r.version);
  }

  /** Runs `fn` in one transaction (nested calls become savepoints); rolls back if it throws. */
  transaction<T>(fn: () => T): T {
    return this.sqlite.transaction(fn)();
  }

  /** Closes the file; further use throws. Safe to call twice. */
  close(): void {
    if (this.sqlite.open) this.sqlite.close();
  }
}
