import BetterSqlite3 from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  currentTx,
  migrationSql,
  txContext,
  type Migration,
  type SqlExecutor,
  type SqlParam,
  type SqlStore,
  type TxContext,
} from './sql-store';

/** `$1 … $n` → `?`, with the parameter list re-ordered (and repeated) to match. */
interface Compiled {
  sql: string;
  order: number[];
}

const SCHEMA_MIGRATIONS = `CREATE TABLE IF NOT EXISTS schema_migrations (
  component TEXT NOT NULL,
  version INTEGER NOT NULL,
  applied_at TEXT NOT NULL,
  PRIMARY KEY (component, version)
)`;

/**
 * The embedded store: one SQLite file (WAL, foreign keys on) behind the async
 * {@link SqlStore} interface. better-sqlite3 is synchronous and has one connection, so a
 * transaction that awaits in the middle would let any other caller's statement run inside
 * it; transactions therefore hold a FIFO lock and every statement outside the transaction
 * waits for it (statements inside are routed to it, see {@link txContext}).
 */
export class SqliteStore implements SqlStore {
  readonly dialect = 'sqlite' as const;
  private readonly compiled = new Map<string, Compiled>();
  private readonly statements = new Map<string, BetterSqlite3.Statement>();
  private locked = false;
  private readonly waiters: (() => void)[] = [];
  private savepoints = 0;

  private constructor(readonly sqlite: BetterSqlite3.Database) {}

  /**
   * Opens (creating if needed) the database file; `':memory:'` gives a private in-memory store.
   * @example
   * const store = SqliteStore.open(join(dataDir, 'fedssl.sqlite'));
   */
  static open(file: string): SqliteStore {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const sqlite = new BetterSqlite3(file);
    // WAL lets readers proceed while the round engine writes; NORMAL sync is safe with WAL.
    if (file !== ':memory:') sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.exec(SCHEMA_MIGRATIONS);
    return new SqliteStore(sqlite);
  }

  private compile(sql: string): Compiled {
    let c = this.compiled.get(sql);
    if (!c) {
      const order: number[] = [];
      const out = sql.replace(/\$(\d+)/g, (_m, n: string) => {
        order.push(Number(n) - 1);
        return '?';
      });
      c = { sql: out, order };
      this.compiled.set(sql, c);
    }
    return c;
  }

  private prepare(sql: string): {
    stmt: BetterSqlite3.Statement;
    bind: (p: readonly SqlParam[]) => SqlParam[];
  } {
    const c = this.compile(sql);
    let stmt = this.statements.get(c.sql);
    if (!stmt) {
      stmt = this.sqlite.prepare(c.sql);
      this.statements.set(c.sql, stmt);
    }
    return {
      stmt,
      bind: (p) =>
        c.order.map((i) => {
          if (i >= p.length) throw new RangeError(`SQL parameter $${i + 1} has no value: ${sql}`);
          return p[i] as SqlParam;
        }),
    };
  }

  private rawQuery<T>(sql: string, params: readonly SqlParam[]): T[] {
    const { stmt, bind } = this.prepare(sql);
    if (!stmt.reader) {
      stmt.run(...bind(params));
      return [];
    }
    return stmt.all(...bind(params)) as T[];
  }

  private rawExecute(sql: string, params: readonly SqlParam[]): { rowCount: number } {
    const { stmt, bind } = this.prepare(sql);
    if (stmt.reader) return { rowCount: stmt.all(...bind(params)).length };
    return { rowCount: stmt.run(...bind(params)).changes };
  }

  private acquire(): Promise<void> {
    if (!this.locked) {
      this.locked = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.locked = false;
  }

  /** Runs a statement outside any transaction: at once when the connection is free, else after the lock. */
  private async outside<T>(fn: () => T): Promise<T> {
    if (!this.locked) return fn();
    await this.acquire();
    try {
      return fn();
    } finally {
      this.release();
    }
  }

  query<T>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    const c = currentTx(this);
    if (c) return c.tx.query<T>(sql, params);
    return this.outside(() => this.rawQuery<T>(sql, params));
  }

  async one<T>(sql: string, params: readonly SqlParam[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  execute(sql: string, params: readonly SqlParam[] = []): Promise<{ rowCount: number }> {
    const c = currentTx(this);
    if (c) return c.tx.execute(sql, params);
    return this.outside(() => this.rawExecute(sql, params));
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    const c = currentTx(this);
    if (c) return c.tx.savepoint(fn);
    await this.acquire();
    const ctx = this.context();
    try {
      this.sqlite.exec('BEGIN IMMEDIATE');
      try {
        const result = await txContext.run(ctx, () => fn(ctx.tx));
        this.sqlite.exec('COMMIT');
        return result;
      } catch (e) {
        if (this.sqlite.inTransaction) this.sqlite.exec('ROLLBACK');
        throw e;
      }
    } finally {
      ctx.done = true;
      this.release();
    }
  }

  private context(): TxContext {
    const ctx: TxContext = {
      store: this,
      done: false,
      tx: {
        query: <T>(sql: string, params: readonly SqlParam[] = []) => {
          this.assertLive(ctx);
          return Promise.resolve(this.rawQuery<T>(sql, params));
        },
        one: async <T>(sql: string, params: readonly SqlParam[] = []) => {
          this.assertLive(ctx);
          return this.rawQuery<T>(sql, params)[0];
        },
        execute: (sql: string, params: readonly SqlParam[] = []) => {
          this.assertLive(ctx);
          return Promise.resolve(this.rawExecute(sql, params));
        },
        savepoint: async <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => {
          this.assertLive(ctx);
          const name = `sp${++this.savepoints}`;
          this.sqlite.exec(`SAVEPOINT ${name}`);
          try {
            const r = await fn(ctx.tx);
            this.sqlite.exec(`RELEASE ${name}`);
            return r;
          } catch (e) {
            this.sqlite.exec(`ROLLBACK TO ${name}`);
            this.sqlite.exec(`RELEASE ${name}`);
            throw e;
          }
        },
      },
    };
    return ctx;
  }

  private assertLive(ctx: TxContext): void {
    if (ctx.done) throw new Error('SQL transaction already ended; use the store, not the old tx');
  }

  async migrate(component: string, migrations: readonly Migration[]): Promise<void> {
    await this.transaction(async () => {
      const row = this.sqlite
        .prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE component = ?')
        .get(component) as { v: number };
      for (let i = row.v; i < migrations.length; i++) {
        const sql = migrationSql(migrations[i] as Migration, 'sqlite');
        await this.transaction(async () => {
          this.sqlite.exec(sql);
          this.sqlite
            .prepare('INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)')
            .run(component, i + 1, new Date().toISOString());
        });
      }
    });
  }

  lock(key: string): Promise<void> {
    if (!currentTx(this)) return Promise.reject(new Error(`lock(${key}) needs a transaction`));
    return Promise.resolve();
  }

  async appliedVersions(component: string): Promise<number[]> {
    const rows = await this.query<{ version: number }>(
      'SELECT version FROM schema_migrations WHERE component = $1 ORDER BY version',
      [component],
    );
    return rows.map((r) => r.version);
  }

  async close(): Promise<void> {
    // Wait for a transaction in flight, then close.
    await this.acquire();
    try {
      if (this.sqlite.open) this.sqlite.close();
    } finally {
      this.release();
    }
  }
}
