import { AsyncLocalStorage } from 'node:async_hooks';

/** Nest injection token for the shared {@link SqlStore}. */
export const SQL_STORE = Symbol('SQL_STORE');

/** A parameter value both drivers bind the same way. */
export type SqlParam = string | number | null;

/**
 * What a repository needs to run SQL. One dialect for both back ends: positional
 * placeholders `$1, $2, …` (PostgreSQL's; the SQLite store rewrites them), TEXT for strings,
 * ISO-8601 timestamps and JSON, INTEGER for numbers (cast aggregates: `CAST(COUNT(*) AS INTEGER)`,
 * PostgreSQL returns bigint as a string otherwise), no booleans, no `rowid`, no `RETURNING`.
 */
export interface SqlExecutor {
  /** All rows of a query. */
  query<T>(sql: string, params?: readonly SqlParam[]): Promise<T[]>;
  /** The first row, or undefined. */
  one<T>(sql: string, params?: readonly SqlParam[]): Promise<T | undefined>;
  /** A statement without result rows; `rowCount` = rows changed. */
  execute(sql: string, params?: readonly SqlParam[]): Promise<{ rowCount: number }>;
}

/**
 * A migration: one SQL script for both back ends, or one per dialect where they differ.
 * A script may hold several statements separated by `;`.
 */
export type Migration = string | { sqlite: string; postgres: string };

/**
 * The coordinator's query layer (ARCHITECTURE.md §5): SQLite embedded, PostgreSQL in
 * production, same queries. Inside {@link SqlStore.transaction}, calls on the store itself
 * (not only on `tx`) are routed to the transaction, so repositories compose without passing
 * the executor around; a nested `transaction` becomes a savepoint.
 */
export interface SqlStore extends SqlExecutor {
  readonly dialect: 'sqlite' | 'postgres';
  /**
   * Runs `fn` in one transaction: committed if it resolves, rolled back if it throws.
   * @example
   * await store.transaction(async (tx) => {
   *   await tx.execute('UPDATE tasks SET state = $1 WHERE id = $2', ['accepted', id]);
   *   await tx.execute('INSERT INTO updates (id) VALUES ($1)', [updateId]);
   * });
   */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /**
   * Applies a component's migrations not yet recorded in `schema_migrations`, in order, each
   * in its own transaction with its row. Migration `i` (0-based) is version `i + 1`; only append.
   */
  migrate(component: string, migrations: readonly Migration[]): Promise<void>;
  /**
   * Inside a transaction: waits until no other transaction holds the lock `key`, held until
   * commit/rollback (PostgreSQL advisory lock; SQLite transactions are serialised already).
   * Used where "read the last row, append the next" must not race (audit chain).
   */
  lock(key: string): Promise<void>;
  /** Versions applied for a component, ascending. */
  appliedVersions(component: string): Promise<number[]>;
  /** Releases the file or the pool; safe to call twice. */
  close(): Promise<void>;
}

/** The script of a migration for a dialect. */
export function migrationSql(m: Migration, dialect: SqlStore['dialect']): string {
  return typeof m === 'string' ? m : m[dialect];
}

/** A transaction in progress, as seen by calls made inside it (via AsyncLocalStorage). */
export interface TxContext {
  /** Who owns this context, so two stores in one process never share a transaction. */
  store: object;
  tx: SqlExecutor & { savepoint<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> };
  /** Set when the transaction ended: late callbacks that inherited the context use the store again. */
  done: boolean;
}

/** Shared by both stores: which transaction (if any) the current async call chain is inside. */
export const txContext = new AsyncLocalStorage<TxContext>();

/** The live transaction of `store` in the current async context, if any. */
export function currentTx(store: object): TxContext | undefined {
  const c = txContext.getStore();
  return c && c.store === store && !c.done ? c : undefined;
}
