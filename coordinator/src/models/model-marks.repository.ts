import type { SqlStore } from '../store/sql-store';

/** What the store records about one model version beyond its files (retention). */
export interface ModelMark {
  version: string;
  /** Marked `keep` by an admin: never pruned while set. */
  keep: boolean;
  keptBy: string | null;
  keptAt: string | null;
  /** When its weights (and exports) were deleted; its signed manifest stays. */
  prunedAt: string | null;
  prunedBy: string | null;
  bytesFreed: number | null;
}

export const MODELS_COMPONENT = 'models';

/** Append-only: never edit a shipped migration. */
export const MODELS_MIGRATIONS: readonly string[] = [
  `CREATE TABLE model_marks (
     version TEXT PRIMARY KEY,
     keep INTEGER NOT NULL DEFAULT 0,
     kept_by TEXT,
     kept_at TEXT,
     pruned_at TEXT,
     pruned_by TEXT,
     bytes_freed INTEGER
   )`,
];

interface MarkDb {
  version: string;
  keep: number;
  keptBy: string | null;
  keptAt: string | null;
  prunedAt: string | null;
  prunedBy: string | null;
  bytesFreed: number | null;
}

const COLUMNS =
  'version, keep, kept_by AS "keptBy", kept_at AS "keptAt", pruned_at AS "prunedAt", pruned_by AS "prunedBy", bytes_freed AS "bytesFreed"';

const toMark = (r: MarkDb): ModelMark => ({ ...r, keep: Number(r.keep) === 1 });

/**
 * Retention marks of model versions (the versions themselves are files: models/<version>/).
 * A row exists only for versions an admin marked or the retention policy pruned. Call
 * {@link init} once (migrations).
 */
export class ModelMarksRepository {
  constructor(readonly db: SqlStore) {}

  async init(): Promise<this> {
    await this.db.migrate(MODELS_COMPONENT, MODELS_MIGRATIONS);
    return this;
  }

  get(version: string): Promise<ModelMark | undefined> {
    return this.db
      .one<MarkDb>(`SELECT ${COLUMNS} FROM model_marks WHERE version = $1`, [version])
      .then((r) => r && toMark(r));
  }

  async list(): Promise<ModelMark[]> {
    return (await this.db.query<MarkDb>(`SELECT ${COLUMNS} FROM model_marks ORDER BY version`)).map(toMark);
  }

  /** Sets or clears the admin's `keep` mark. */
  async setKeep(version: string, keep: boolean, by: string, at: string): Promise<void> {
    await this.db.execute(
      `INSERT INTO model_marks (version, keep, kept_by, kept_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (version) DO UPDATE SET keep = $2, kept_by = $3, kept_at = $4`,
      [version, keep ? 1 : 0, by, at],
    );
  }

  /**
   * Records that a version's weights were deleted. Only the first call counts (a version is
   * pruned once); returns false when it was already marked.
   */
  async markPruned(version: string, by: string, at: string, bytesFreed: number): Promise<boolean> {
    await this.db.execute(
      `INSERT INTO model_marks (version, keep) VALUES ($1, 0) ON CONFLICT (version) DO NOTHING`,
      [version],
    );
    const r = await this.db.execute(
      'UPDATE model_marks SET pruned_at = $1, pruned_by = $2, bytes_freed = $3 WHERE version = $4 AND pruned_at IS NULL',
      [at, by, bytesFreed, version],
    );
    return r.rowCount === 1;
  }
}
