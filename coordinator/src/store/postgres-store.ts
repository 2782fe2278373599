import { Pool, type PoolClient } from 'pg';
import { FedsslError } from '@fedssl/shared/errors';
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

export interface PostgresStoreOptions {
  /** postgres:// or postgresql:// URL. */
  url: string;
  /**
   * Schema for every table (created if missing; set as the search_path of each connection),
   * so several coordinators or test runs can share one database. Default: the server's (public).
   */
  schema?: string;
  /** Pool size (default 10). */
  max?: number;
}

/** A schema name we are willing to splice into SQL. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** The URL without its password, for error messages. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'the configured PostgreSQL URL';
  }
}

/**
 * The production store: PostgreSQL through a `pg` Pool, behind the same {@link SqlStore}
 * interface and the same SQL as the SQLite store. Transactions take a dedicated client;
 * statements issued inside one (on the store or on `tx`) run on that client.
 */
export class PostgresStore implements SqlStore {
  readonly dialect = 'postgres' as const;
  private savepoints = 0;
  private closed = false;

  private constructor(
    private readonly pool: Pool,
    readonly schema: string | undefined,
  ) {}

  /**
   * Connects (one round trip to prove it), creates the schema if asked and the
   * `schema_migrations` table.
   * @throws FedsslError STORE_UNAVAILABLE when the server cannot be reached or refuses us.
   * @example
   * const store = await PostgresStore.open({ url: 'postgresql://postgres@127.0.0.1:5432/test', schema: 't_1' });
   */
  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const schema = opts.schema ?? new URL(opts.url).searchParams.get('schema') ?? undefined;
    if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
      throw new FedsslError(
        'COORDINATOR_CONFIG_INVALID',
        `invalid PostgreSQL schema name "${schema.slice(0, 80)}": use lower-case letters, digits and _`,
      );
    }
    const url = new URL(opts.url);
    url.searchParams.delete('schema');
    const pool = new Pool({
      connectionString: url.toString(),
      max: opts.max ?? 10,
      connectionTimeoutMillis: 10_000,
      ...(schema ? { options: `-c search_path=${schema}` } : {}),
    });
    // An idle client that dies (server restart) must not crash the process; the next query
    // takes a fresh connection and reports its own error.
    pool.on('error', () => undefined);
    try {
      if (schema) {
        // Before search_path can point at it, the schema must exist.
        await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      }
      await pool.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        component TEXT NOT NULL,
        version INTEGER NOT NULL,
        applied_at TEXT NOT NULL,
        PRIMARY KEY (component, version)
      )`);
    } catch (e) {
      await pool.end().catch(() => undefined);
      const why = e instanceof Error ? e.message || (e as { code?: string }).code || e.name : String(e);
      throw new FedsslError(
        'STORE_UNAVAILABLE',
        `PostgreSQL at ${redactUrl(opts.url)} is unreachable or refused the connection: ${why}`,
      );
    }
    return new PostgresStore(pool, schema);
  }

  async query<T>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    const c = currentTx(this);
    if (c) return c.tx.query<T>(sql, params);
    const r = params.length ? await this.pool.query(sql, params as SqlParam[]) : await this.pool.query(sql);
    return r.rows as T[];
  }

  async one<T>(sql: string, params: readonly SqlParam[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  async execute(sql: string, params: readonly SqlParam[] = []): Promise<{ rowCount: number }> {
    const c = currentTx(this);
    if (c) return c.tx.execute(sql, params);
    const r = params.length ? await this.pool.query(sql, params as SqlParam[]) : await this.pool.query(sql);
    return { rowCount: r.rowCount ?? 0 };
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    const c = currentTx(this);
    if (c) return c.tx.savepoint(fn);
    const client = await this.pool.connect();
    const ctx = this.context(client);
    let broken = false;
    try {
      await client.query('BEGIN');
      try {
        const result = await txContext.run(ctx, () => fn(ctx.tx));
        await client.query('COMMIT');
        return result;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw e;
      }
    } finally {
      ctx.done = true;
      client.release(broken);
    }
  }

  private context(client: PoolClient): TxContext {
    const live = () => {
      if (ctx.done) throw new Error('SQL transaction already ended; use the store, not the old tx');
    };
    const run = async (sql: string, params: readonly SqlParam[]) => {
      live();
      // No parameters: the simple protocol, which also runs multi-statement migration scripts.
      return params.length ? client.query(sql, params as SqlParam[]) : client.query(sql);
    };
    const ctx: TxContext = {
      store: this,
      done: false,
      tx: {
        query: async <T>(sql: string, params: readonly SqlParam[] = []) =>
          (await run(sql, params)).rows as T[],
        one: async <T>(sql: string, params: readonly SqlParam[] = []) =>
          (await run(sql, params)).rows[0] as T | undefined,
        execute: async (sql: string, params: readonly SqlParam[] = []) => ({
          rowCount: (await run(sql, params)).rowCount ?? 0,
        }),
        savepoint: async <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => {
          live();
          const name = `sp${++this.savepoints}`;
          await client.query(`SAVEPOINT ${name}`);
          try {
            const r = await fn(ctx.tx);
            await client.query(`RELEASE SAVEPOINT ${name}`);
            return r;
          } catch (e) {
            await client.query(`ROLLBACK TO SAVEPOINT ${name}`);
            await client.query(`RELEASE SAVEPOINT ${name}`);
            throw e;
          }
        },
      },
    };
    return ctx;
  }

  async migrate(component: string, migrations: readonly Migration[]): Promise<void> {
    for (;;) {
      // One migration per transaction; the advisory lock makes replicas starting together
      // apply each migration once (the second waits, then sees it recorded).
      const applied = await this.transaction(async (tx) => {
        await this.lock('fedssl.schema_migrations');
        const row = await tx.one<{ v: number }>(
          'SELECT CAST(COALESCE(MAX(version), 0) AS INTEGER) AS v FROM schema_migrations WHERE component = $1',
          [component],
        );
        const next = row?.v ?? 0;
        if (next >= migrations.length) return false;
        await tx.execute(migrationSql(migrations[next] as Migration, 'postgres'));
        await tx.execute(
          'INSERT INTO schema_migrations (component, version, applied_at) VALUES ($1, $2, $3)',
          [component, next + 1, new Date().toISOString()],
        );
        return true;
      });
      if (!applied) return;
    }
  }

  async lock(key: string): Promise<void> {
    const c = currentTx(this);
    if (!c) throw new Error(`lock(${key}) needs a transaction`);
    await c.tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key]);
  }

  async appliedVersions(component: string): Promise<number[]> {
    const rows = await this.query<{ version: number }>(
      'SELECT version FROM schema_migrations WHERE component = $1 ORDER BY version',
      [component],
    );
    return rows.map((r) => r.version);
  }

  /** Drops this store's schema and everything in it (tests); refuses without a schema. */
  async dropSchema(): Promise<void> {
    if (!this.schema) throw new Error('dropSchema needs a store opened with a schema');
    await this.pool.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
