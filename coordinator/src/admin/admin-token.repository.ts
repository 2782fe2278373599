import { Inject, Injectable } from '@nestjs/common';
import { DATABASE, type Database } from '../store/database';

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
];

const COLUMNS =
  'id, name, role, created_at AS createdAt, revoked_at AS revokedAt, last_used_at AS lastUsedAt';

/** SQL for admin tokens. */
@Injectable()
export class AdminTokenRepository {
  constructor(@Inject(DATABASE) private readonly db: Database) {
    db.migrate(ADMIN_COMPONENT, ADMIN_MIGRATIONS);
  }

  insert(row: { id: string; name: string; role: AdminRole; tokenHash: string; createdAt: string }): void {
    this.db.sqlite
      .prepare('INSERT INTO admin_tokens (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(row.id, row.name, row.role, row.tokenHash, row.createdAt);
  }

  get(id: string): AdminTokenRecord | undefined {
    return this.db.sqlite.prepare(`SELECT ${COLUMNS} FROM admin_tokens WHERE id = ?`).get(id) as
      AdminTokenRecord | undefined;
  }

  getByHash(tokenHash: string): AdminTokenRecord | undefined {
    return this.db.sqlite
      .prepare(`SELECT ${COLUMNS} FROM admin_tokens WHERE token_hash = ?`)
      .get(tokenHash) as AdminTokenRecord | undefined;
  }

  list(): AdminTokenRecord[] {
    return this.db.sqlite
      .prepare(`SELECT ${COLUMNS} FROM admin_tokens ORDER BY created_at, rowid`)
      .all() as AdminTokenRecord[];
  }

  revoke(id: string, at: string): void {
    this.db.sqlite
      .prepare('UPDATE admin_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL')
      .run(at, id);
  }

  touch(id: string, at: string): void {
    this.db.sqlite.prepare('UPDATE admin_tokens SET last_used_at = ? WHERE id = ?').run(at, id);
  }
}
