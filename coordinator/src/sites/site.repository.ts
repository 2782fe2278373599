import { Inject, Injectable } from '@nestjs/common';
import { DATABASE, type Database } from '../store/database';

/** A site as the registry reports it (the `GET /sites` shape, minus `online`). */
export interface SiteRecord {
  id: string;
  name: string;
  /** Base64 Ed25519 public key; empty string while the site is still `pending`. */
  signingPublicKey: string;
  /** Base64 X25519 public key; empty string while the site is still `pending`. */
  boxPublicKey: string;
  status: 'pending' | 'enrolled' | 'revoked';
  createdAt: string;
  enrolledAt: string | null;
  revokedAt: string | null;
  lastSeenAt: string | null;
  agentVersion: string | null;
  backend: string | null;
  exampleCount: number | null;
}

/** One enrollment token row (only the SHA-256 of the token is ever stored). */
export interface EnrollmentTokenRow {
  tokenHash: string;
  siteId: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
}

/** Component name under which the sites tables are migrated. */
export const SITES_COMPONENT = 'sites';

/** Append-only: never edit a shipped migration. */
export const SITES_MIGRATIONS: readonly string[] = [
  `CREATE TABLE sites (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     signing_public_key TEXT UNIQUE,
     box_public_key TEXT,
     status TEXT NOT NULL CHECK (status IN ('pending','enrolled','revoked')),
     created_at TEXT NOT NULL,
     enrolled_at TEXT,
     revoked_at TEXT,
     revoke_reason TEXT,
     last_seen_at TEXT,
     agent_version TEXT,
     backend TEXT,
     example_count INTEGER
   );
   CREATE TABLE enrollment_tokens (
     token_hash TEXT PRIMARY KEY,
     site_id TEXT NOT NULL REFERENCES sites(id),
     created_at TEXT NOT NULL,
     expires_at TEXT NOT NULL,
     used_at TEXT
   );
   CREATE INDEX enrollment_tokens_site ON enrollment_tokens(site_id);`,
];

interface SiteRow {
  id: string;
  name: string;
  signing_public_key: string | null;
  box_public_key: string | null;
  status: SiteRecord['status'];
  created_at: string;
  enrolled_at: string | null;
  revoked_at: string | null;
  last_seen_at: string | null;
  agent_version: string | null;
  backend: string | null;
  example_count: number | null;
}

function toRecord(r: SiteRow): SiteRecord {
  return {
    id: r.id,
    name: r.name,
    signingPublicKey: r.signing_public_key ?? '',
    boxPublicKey: r.box_public_key ?? '',
    status: r.status,
    createdAt: r.created_at,
    enrolledAt: r.enrolled_at,
    revokedAt: r.revoked_at,
    lastSeenAt: r.last_seen_at,
    agentVersion: r.agent_version,
    backend: r.backend,
    exampleCount: r.example_count,
  };
}

/** SQL for sites and enrollment tokens; no rules here, only storage. */
@Injectable()
export class SiteRepository {
  constructor(@Inject(DATABASE) private readonly db: Database) {
    db.migrate(SITES_COMPONENT, SITES_MIGRATIONS);
  }

  get(id: string): SiteRecord | undefined {
    const r = this.db.sqlite.prepare('SELECT * FROM sites WHERE id = ?').get(id) as SiteRow | undefined;
    return r && toRecord(r);
  }

  getByName(name: string): SiteRecord | undefined {
    const r = this.db.sqlite.prepare('SELECT * FROM sites WHERE name = ?').get(name) as SiteRow | undefined;
    return r && toRecord(r);
  }

  getBySigningKey(signingPublicKey: string): SiteRecord | undefined {
    const r = this.db.sqlite
      .prepare('SELECT * FROM sites WHERE signing_public_key = ?')
      .get(signingPublicKey) as SiteRow | undefined;
    return r && toRecord(r);
  }

  list(): SiteRecord[] {
    return (this.db.sqlite.prepare('SELECT * FROM sites ORDER BY created_at, rowid').all() as SiteRow[]).map(
      toRecord,
    );
  }

  insertPending(id: string, name: string, createdAt: string): void {
    this.db.sqlite
      .prepare("INSERT INTO sites (id, name, status, created_at) VALUES (?, ?, 'pending', ?)")
      .run(id, name, createdAt);
  }

  insertToken(row: Omit<EnrollmentTokenRow, 'usedAt'>): void {
    this.db.sqlite
      .prepare(
        'INSERT INTO enrollment_tokens (token_hash, site_id, created_at, expires_at) VALUES (?, ?, ?, ?)',
      )
      .run(row.tokenHash, row.siteId, row.createdAt, row.expiresAt);
  }

  getToken(tokenHash: string): EnrollmentTokenRow | undefined {
    return this.db.sqlite
      .prepare(
        'SELECT token_hash AS tokenHash, site_id AS siteId, created_at AS createdAt, expires_at AS expiresAt, used_at AS usedAt FROM enrollment_tokens WHERE token_hash = ?',
      )
      .get(tokenHash) as EnrollmentTokenRow | undefined;
  }

  /** Marks the token used if it was not; returns false when another request got there first. */
  markTokenUsed(tokenHash: string, usedAt: string): boolean {
    return (
      this.db.sqlite
        .prepare('UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL')
        .run(usedAt, tokenHash).changes === 1
    );
  }

  setEnrolled(
    id: string,
    keys: { signingPublicKey: string; boxPublicKey: string; agentVersion: string },
    at: string,
  ): void {
    this.db.sqlite
      .prepare(
        "UPDATE sites SET status = 'enrolled', signing_public_key = ?, box_public_key = ?, agent_version = ?, enrolled_at = ? WHERE id = ?",
      )
      .run(keys.signingPublicKey, keys.boxPublicKey, keys.agentVersion, at, id);
  }

  setRevoked(id: string, reason: string, at: string): void {
    this.db.sqlite
      .prepare("UPDATE sites SET status = 'revoked', revoked_at = ?, revoke_reason = ? WHERE id = ?")
      .run(at, reason, id);
  }

  setStatus(
    id: string,
    s: { lastSeenAt: string; backend?: string; exampleCount?: number; agentVersion?: string },
  ): void {
    this.db.sqlite
      .prepare(
        'UPDATE sites SET last_seen_at = ?, backend = COALESCE(?, backend), example_count = COALESCE(?, example_count), agent_version = COALESCE(?, agent_version) WHERE id = ?',
      )
      .run(s.lastSeenAt, s.backend ?? null, s.exampleCount ?? null, s.agentVersion ?? null, id);
  }
}
