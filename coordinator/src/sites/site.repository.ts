import { Inject, Injectable } from '@nestjs/common';
import { fromBase64, keyId } from '@fedssl/shared/crypto';
import { SQL_STORE, type SqlStore } from '../store/sql-store';

/** One signing + box key pair a site has registered (the first at enrollment, then one per rotation). */
export interface SiteKeyRecord {
  keyId: string;
  signingPublicKey: string;
  boxPublicKey: string;
  createdAt: string;
  /** When a rotation replaced it; null for the site's current key. */
  retiredAt: string | null;
  /** End of its grace period; null for the current key. */
  validUntil: string | null;
}

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
  /** Every key the site registered, oldest first; the last one is `signingPublicKey`'s. */
  keys: SiteKeyRecord[];
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
  `CREATE TABLE site_keys (
     key_id TEXT PRIMARY KEY,
     site_id TEXT NOT NULL REFERENCES sites(id),
     signing_public_key TEXT NOT NULL UNIQUE,
     box_public_key TEXT NOT NULL,
     created_at TEXT NOT NULL,
     retired_at TEXT,
     valid_until TEXT
   );
   CREATE INDEX site_keys_site ON site_keys(site_id);`,
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

interface SiteKeyRow {
  site_id: string;
  key_id: string;
  signing_public_key: string;
  box_public_key: string;
  created_at: string;
  retired_at: string | null;
  valid_until: string | null;
}

function toKeyRecord(r: SiteKeyRow): SiteKeyRecord {
  return {
    keyId: r.key_id,
    signingPublicKey: r.signing_public_key,
    boxPublicKey: r.box_public_key,
    createdAt: r.created_at,
    retiredAt: r.retired_at,
    validUntil: r.valid_until,
  };
}

// Replaced keys in the order they were replaced, the current key (never replaced) last.
const KEY_ORDER = "ORDER BY created_at, COALESCE(retired_at, '~'), key_id";

function toRecord(r: SiteRow, keys: SiteKeyRecord[]): SiteRecord {
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
    keys,
  };
}

const TOKEN_COLUMNS =
  'token_hash AS "tokenHash", site_id AS "siteId", created_at AS "createdAt", expires_at AS "expiresAt", used_at AS "usedAt"';

/**
 * SQL for sites and enrollment tokens; no rules here, only storage. Call {@link init}
 * (migrations) once before use; the Nest provider does.
 */
@Injectable()
export class SiteRepository {
  constructor(@Inject(SQL_STORE) private readonly db: SqlStore) {}

  /** Applies this component's migrations, then gives sites enrolled before key history a first key row. */
  async init(): Promise<this> {
    await this.db.migrate(SITES_COMPONENT, SITES_MIGRATIONS);
    const missing = await this.db.query<SiteRow>(
      'SELECT * FROM sites WHERE signing_public_key IS NOT NULL AND id NOT IN (SELECT site_id FROM site_keys)',
    );
    for (const r of missing) {
      let id: string;
      try {
        id = keyId(fromBase64(r.signing_public_key!, 32));
      } catch {
        continue; // not a key (hand-made row): nothing to carry over
      }
      await this.insertKey({
        siteId: r.id,
        keyId: id,
        signingPublicKey: r.signing_public_key!,
        boxPublicKey: r.box_public_key ?? '',
        createdAt: r.enrolled_at ?? r.created_at,
      });
    }
    return this;
  }

  private async withKeys(r: SiteRow | undefined): Promise<SiteRecord | undefined> {
    return r && toRecord(r, await this.listKeys(r.id));
  }

  async get(id: string): Promise<SiteRecord | undefined> {
    return this.withKeys(await this.db.one<SiteRow>('SELECT * FROM sites WHERE id = $1', [id]));
  }

  async getByName(name: string): Promise<SiteRecord | undefined> {
    return this.withKeys(await this.db.one<SiteRow>('SELECT * FROM sites WHERE name = $1', [name]));
  }

  async getBySigningKey(signingPublicKey: string): Promise<SiteRecord | undefined> {
    return this.withKeys(
      await this.db.one<SiteRow>('SELECT * FROM sites WHERE signing_public_key = $1', [signingPublicKey]),
    );
  }

  async list(): Promise<SiteRecord[]> {
    const rows = await this.db.query<SiteRow>('SELECT * FROM sites ORDER BY created_at, id');
    const keys = new Map<string, SiteKeyRecord[]>();
    for (const k of await this.db.query<SiteKeyRow>(`SELECT * FROM site_keys ${KEY_ORDER}`)) {
      const list = keys.get(k.site_id) ?? [];
      list.push(toKeyRecord(k));
      keys.set(k.site_id, list);
    }
    return rows.map((r) => toRecord(r, keys.get(r.id) ?? []));
  }

  /** A site's keys, oldest first (the current one last). */
  async listKeys(siteId: string): Promise<SiteKeyRecord[]> {
    return (
      await this.db.query<SiteKeyRow>(`SELECT * FROM site_keys WHERE site_id = $1 ${KEY_ORDER}`, [siteId])
    ).map(toKeyRecord);
  }

  /** The site that ever registered this signing key, if any (keys are never reused). */
  async siteOfKey(signingPublicKey: string): Promise<string | undefined> {
    const r = await this.db.one<{ site_id: string }>(
      'SELECT site_id FROM site_keys WHERE signing_public_key = $1',
      [signingPublicKey],
    );
    return r?.site_id;
  }

  async insertKey(k: {
    siteId: string;
    keyId: string;
    signingPublicKey: string;
    boxPublicKey: string;
    createdAt: string;
  }): Promise<void> {
    await this.db.execute(
      'INSERT INTO site_keys (key_id, site_id, signing_public_key, box_public_key, created_at) VALUES ($1, $2, $3, $4, $5)',
      [k.keyId, k.siteId, k.signingPublicKey, k.boxPublicKey, k.createdAt],
    );
  }

  /**
   * Marks a site's current key replaced, accepted until `validUntil`. Returns false when it was
   * not current any more (a concurrent rotation got there first).
   */
  async retireKey(siteId: string, keyId: string, retiredAt: string, validUntil: string): Promise<boolean> {
    const r = await this.db.execute(
      'UPDATE site_keys SET retired_at = $1, valid_until = $2 WHERE site_id = $3 AND key_id = $4 AND retired_at IS NULL',
      [retiredAt, validUntil, siteId, keyId],
    );
    return r.rowCount === 1;
  }

  /** Points the site at its new current keys. */
  async setCurrentKeys(siteId: string, signingPublicKey: string, boxPublicKey: string): Promise<void> {
    await this.db.execute('UPDATE sites SET signing_public_key = $1, box_public_key = $2 WHERE id = $3', [
      signingPublicKey,
      boxPublicKey,
      siteId,
    ]);
  }

  async insertPending(id: string, name: string, createdAt: string): Promise<void> {
    await this.db.execute("INSERT INTO sites (id, name, status, created_at) VALUES ($1, $2, 'pending', $3)", [
      id,
      name,
      createdAt,
    ]);
  }

  async insertToken(row: Omit<EnrollmentTokenRow, 'usedAt'>): Promise<void> {
    await this.db.execute(
      'INSERT INTO enrollment_tokens (token_hash, site_id, created_at, expires_at) VALUES ($1, $2, $3, $4)',
      [row.tokenHash, row.siteId, row.createdAt, row.expiresAt],
    );
  }

  async getToken(tokenHash: string): Promise<EnrollmentTokenRow | undefined> {
    return this.db.one<EnrollmentTokenRow>(
      `SELECT ${TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1`,
      [tokenHash],
    );
  }

  /** Enrollment tokens of a site, oldest first (never the token itself). */
  async listTokens(siteId: string): Promise<EnrollmentTokenRow[]> {
    return this.db.query<EnrollmentTokenRow>(
      `SELECT ${TOKEN_COLUMNS} FROM enrollment_tokens WHERE site_id = $1 ORDER BY created_at, token_hash`,
      [siteId],
    );
  }

  /** Every enrollment token with its site's name and status, newest first (never the token itself). */
  async listAllTokens(): Promise<
    (EnrollmentTokenRow & { siteName: string; siteStatus: SiteRecord['status'] })[]
  > {
    return this.db.query(
      `SELECT t.token_hash AS "tokenHash", t.site_id AS "siteId", t.created_at AS "createdAt",
              t.expires_at AS "expiresAt", t.used_at AS "usedAt", s.name AS "siteName", s.status AS "siteStatus"
         FROM enrollment_tokens t JOIN sites s ON s.id = t.site_id
        ORDER BY t.created_at DESC, t.token_hash`,
    );
  }

  /**
   * Moves a site's unused, unexpired tokens' expiry to `at`; returns how many it changed
   * (0 when another request used or expired them first).
   */
  async expireTokens(siteId: string, at: string): Promise<number> {
    const r = await this.db.execute(
      'UPDATE enrollment_tokens SET expires_at = $1 WHERE site_id = $2 AND used_at IS NULL AND expires_at > $1',
      [at, siteId],
    );
    return r.rowCount;
  }

  /** Marks the token used if it was not; returns false when another request got there first. */
  async markTokenUsed(tokenHash: string, usedAt: string): Promise<boolean> {
    const r = await this.db.execute(
      'UPDATE enrollment_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL',
      [usedAt, tokenHash],
    );
    return r.rowCount === 1;
  }

  async setEnrolled(
    id: string,
    keys: { signingPublicKey: string; boxPublicKey: string; agentVersion: string },
    at: string,
  ): Promise<void> {
    await this.db.execute(
      "UPDATE sites SET status = 'enrolled', signing_public_key = $1, box_public_key = $2, agent_version = $3, enrolled_at = $4 WHERE id = $5",
      [keys.signingPublicKey, keys.boxPublicKey, keys.agentVersion, at, id],
    );
  }

  async setRevoked(id: string, reason: string, at: string): Promise<void> {
    await this.db.execute(
      "UPDATE sites SET status = 'revoked', revoked_at = $1, revoke_reason = $2 WHERE id = $3",
      [at, reason, id],
    );
  }

  async setStatus(
    id: string,
    s: { lastSeenAt: string; backend?: string; exampleCount?: number; agentVersion?: string },
  ): Promise<void> {
    await this.db.execute(
      'UPDATE sites SET last_seen_at = $1, backend = COALESCE($2, backend), example_count = COALESCE($3, example_count), agent_version = COALESCE($4, agent_version) WHERE id = $5',
      [s.lastSeenAt, s.backend ?? null, s.exampleCount ?? null, s.agentVersion ?? null, id],
    );
  }
}
