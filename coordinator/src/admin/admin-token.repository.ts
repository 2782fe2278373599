import { Inject, Injectable } from '@nestjs/common';
import { SQL_STORE, type SqlStore } from '../store/sql-store';

/** Admin API roles, strongest first. */
export const ADMIN_ROLES = ['admin', 'operator', 'viewer'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** An admin token as listed (never the token itself, never its hash). */
export interface AdminTokenRecord {
  id: string;
  name: string;
  role: AdminRole;
  createdAt: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
  /** After this instant the token is refused (ADMIN_TOKEN_EXPIRED); null = never expires. */
  expiresAt: string | null;
}

export const ADMIN_COMPONENT = 'admin';

/** Append-only: never edit a shipped migration. */
export const ADMIN_MIGRATIONS: readonly string[] = [
  `CREATE TABLE admin_tokens (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN ('admin','operator','viewer')),
     token_hash TEXT NOT NULL UNIQUE,
     created_at TEXT NOT NULL,
     revoked_at TEXT,
     last_used_at TEXT
   )`,
  `ALTER TABLE admin_tokens ADD COLUMN expires_at TEXT`,
];

const COLUMNS =
  'id, name, role, created_at AS "createdAt", revoked_at AS "revokedAt", last_used_at AS "lastUsedAt", ' +
  'expires_at AS "expiresAt"';

/** SQL for admin tokens. Call {@link init} (migrations) once before use; the Nest provider does. */
@Injectable()
export class AdminTokenRepository {
  constructor(@Inject(SQL_STORE) private readonly db: SqlStore) {}

  /** Applies this component's migrations. */
  async init(): Promise<this> {
    await this.db.migrate(ADMIN_COMPONENT, ADMIN_MIGRATIONS);
    return this;
  }

  async insert(row: {
    id: string;
    name: string;
    role: AdminRole;
    tokenHash: string;
    createdAt: string;
    expiresAt?: string | null;
  }): Promise<void> {
    await this.db.execute(
      'INSERT INTO admin_tokens (id, name, role, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [row.id, row.name, row.role, row.tokenHash, row.createdAt, row.expiresAt ?? null],
    );
  }

  get(id: string): Promise<AdminTokenRecord | undefined> {
    return this.db.one<AdminTokenRecord>(`SELECT ${COLUMNS} FROM admin_tokens WHERE id = $1`, [id]);
  }

  getByHash(tokenHash: string): Promise<AdminTokenRecord | undefined> {
    return this.db.one<AdminTokenRecord>(`SELECT ${COLUMNS} FROM admin_tokens WHERE token_hash = $1`, [
      tokenHash,
    ]);
  }

  list(): Promise<AdminTokenRecord[]> {
    return this.db.query<AdminTokenRecord>(`SELECT ${COLUMNS} FROM admin_tokens ORDER BY created_at, id`);
  }

  /** Revokes a live token; false when it was already revoked (or does not exist). */
  async revoke(id: string, at: string): Promise<boolean> {
    const r = await this.db.execute(
      'UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL',
      [at, id],
    );
    return r.rowCount === 1;
  }

  async touch(id: string, at: string): Promise<void> {
    await this.db.execute('UPDATE admin_tokens SET last_used_at = $1 WHERE id = $2', [at, id]);
  }
}
