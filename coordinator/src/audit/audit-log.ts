import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { canonicalJson } from '@fedssl/shared/crypto';
import { CLOCK, isoNow, type Clock } from '../config/clock';
import { SQL_STORE, type SqlStore } from '../store/sql-store';

/** Who did it: `admin:<token id>`, `site:<site id>` or `system` (the round engine, the CLI). */
export type AuditActor = `admin:${string}` | `site:${string}` | 'system';

/** Every state change the coordinator records (ARCHITECTURE.md §4). */
export const AUDIT_ACTIONS = [
  'enrollment-token.created',
  'enrollment-token.expired',
  'site.enrolled',
  'site.revoked',
  'site.keys-rotated',
  'coordinator.keys-rotated',
  'admin-token.created',
  'admin-token.revoked',
  'run.created',
  'run.started',
  'run.paused',
  'run.resumed',
  'run.cancelled',
  'run.completed',
  'run.failed',
  'round.published',
  'round.failed',
  'round.updates-carried',
  'round.updates-not-carried',
  'update.accepted',
  'update.rejected',
  'model.pruned',
  'model.kept',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** One entry of the hash chain. */
export interface AuditEntry {
  seq: number;
  at: string;
  actor: string;
  action: string;
  /** What it was done to: a site, run, token or task id. */
  target: string;
  /** Small JSON object; never secrets, never patient data. */
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/** The result of {@link AuditLog.verify}. */
export interface AuditVerification {
  ok: boolean;
  /** Entries checked (all of them when ok). */
  entries: number;
  /** The first entry whose seq, link or hash does not check. */
  firstBadSeq?: number;
  reason?: string;
}

/** prevHash of the first entry. */
export const AUDIT_GENESIS = '0'.repeat(64);

export const AUDIT_COMPONENT = 'audit';
/** Append-only: never edit a shipped migration. */
export const AUDIT_MIGRATIONS: readonly string[] = [
  `CREATE TABLE audit_log (
     seq INTEGER PRIMARY KEY,
     at TEXT NOT NULL,
     actor TEXT NOT NULL,
     action TEXT NOT NULL,
     target TEXT NOT NULL,
     details TEXT NOT NULL,
     prev_hash TEXT NOT NULL,
     hash TEXT NOT NULL
   );
   CREATE INDEX audit_log_target ON audit_log(target);`,
];

interface AuditDb {
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  details: string;
  prev_hash: string;
  hash: string;
}

/**
 * SHA-256 (hex) of the canonical JSON of an entry without its hash; prevHash is inside, so
 * each hash covers the whole chain before it.
 */
export function auditHash(e: Omit<AuditEntry, 'hash'>): string {
  const body = canonicalJson({
    seq: e.seq,
    at: e.at,
    actor: e.actor,
    action: e.action,
    target: e.target,
    details: e.details,
    prevHash: e.prevHash,
  });
  return createHash('sha256').update(body).digest('hex');
}

const toEntry = (r: AuditDb): AuditEntry => ({
  seq: r.seq,
  at: r.at,
  actor: r.actor,
  action: r.action,
  target: r.target,
  details: JSON.parse(r.details) as Record<string, unknown>,
  prevHash: r.prev_hash,
  hash: r.hash,
});

/** Rows read per query while verifying, so memory stays bounded for a long log. */
const VERIFY_PAGE = 500;

/**
 * The append-only, hash-chained audit log. {@link append} inside a store transaction joins
 * it, so a state change and its entry are committed together or not at all. Call
 * {@link init} once (migrations).
 */
@Injectable()
export class AuditLog {
  constructor(
    @Inject(SQL_STORE) private readonly db: SqlStore,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  async init(): Promise<this> {
    await this.db.migrate(AUDIT_COMPONENT, AUDIT_MIGRATIONS);
    return this;
  }

  /**
   * Appends one entry after the current last one.
   * @example
   * await audit.append('admin:adm-1', 'site.revoked', site.id, { reason });
   */
  append(
    actor: AuditActor,
    action: AuditAction,
    target: string,
    details: Record<string, unknown> = {},
  ): Promise<AuditEntry> {
    return this.db.transaction(async () => {
      await this.db.lock('fedssl.audit_log');
      const last = await this.db.one<{ seq: number; hash: string }>(
        'SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1',
      );
      // A JSON round trip drops undefined members so what is hashed is what is stored.
      const clean = JSON.parse(JSON.stringify(details)) as Record<string, unknown>;
      const base = {
        seq: (last?.seq ?? 0) + 1,
        at: isoNow(this.clock),
        actor,
        action,
        target,
        details: clean,
        prevHash: last?.hash ?? AUDIT_GENESIS,
      };
      const entry: AuditEntry = { ...base, hash: auditHash(base) };
      await this.db.execute(
        'INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
        [
          entry.seq,
          entry.at,
          entry.actor,
          entry.action,
          entry.target,
          JSON.stringify(clean),
          entry.prevHash,
          entry.hash,
        ],
      );
      return entry;
    });
  }

  /** Entries with seq > `after`, ascending, at most `limit`. */
  async list(opts: { after?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    const rows = await this.db.query<AuditDb>(
      'SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2',
      [opts.after ?? 0, opts.limit ?? 100],
    );
    return rows.map(toEntry);
  }

  /** Number of entries. */
  async count(): Promise<number> {
    return (await this.db.one<{ n: number }>('SELECT CAST(COUNT(*) AS INTEGER) AS n FROM audit_log'))?.n ?? 0;
  }

  /**
   * Walks the chain from the first entry: seqs must be 1, 2, 3…, each prevHash the previous
   * hash, each hash recomputed from the stored fields. Reports the first entry that fails.
   */
  async verify(): Promise<AuditVerification> {
    let prevHash = AUDIT_GENESIS;
    let expected = 1;
    for (;;) {
      const rows = await this.db.query<AuditDb>(
        'SELECT * FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2',
        [expected, VERIFY_PAGE],
      );
      for (const r of rows) {
        const bad = (reason: string): AuditVerification => ({
          ok: false,
          entries: expected - 1,
          firstBadSeq: expected,
          reason,
        });
        if (r.seq !== expected) return bad(`entry ${expected} is missing (next stored entry is ${r.seq})`);
        let e: AuditEntry;
        try {
          e = toEntry(r);
        } catch {
          return bad(`entry ${expected} has details that are not JSON`);
        }
        if (e.prevHash !== prevHash)
          return bad(`entry ${expected} does not link to the hash of entry ${expected - 1}`);
        if (auditHash(e) !== e.hash) return bad(`entry ${expected} does not match its hash`);
        prevHash = e.hash;
        expected++;
      }
      if (rows.length < VERIFY_PAGE) return { ok: true, entries: expected - 1 };
    }
  }
}
