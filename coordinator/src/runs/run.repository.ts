import type { SqlParam, SqlStore } from '../store/sql-store';
import type { SignedTask } from '@fedssl/shared/protocol';
import type { RunConfig } from './run-config';
import type { ParticipantState, RoundRow, RunRecord, RunState, TaskRow, UpdateRow } from './run.types';

/** Migrations of the `runs` component; append only, never edit a shipped one. */
export const RUNS_MIGRATIONS: readonly string[] = [
  `CREATE TABLE runs (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     state TEXT NOT NULL,
     config TEXT NOT NULL,
     current_round INTEGER NOT NULL DEFAULT 0,
     initial_model_version TEXT,
     latest_model_version TEXT,
     reason TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE TABLE rounds (
     run_id TEXT NOT NULL REFERENCES runs(id),
     round INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     state TEXT NOT NULL,
     started_at TEXT NOT NULL,
     deadline TEXT,
     published_at TEXT,
     base_model_version TEXT NOT NULL,
     base_model_sha256 TEXT NOT NULL,
     model_version TEXT,
     model_sha256 TEXT,
     reason TEXT,
     PRIMARY KEY (run_id, round, attempt)
   );
   CREATE TABLE tasks (
     id TEXT PRIMARY KEY,
     run_id TEXT NOT NULL,
     round INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     site_id TEXT NOT NULL,
     nonce TEXT NOT NULL,
     model_version TEXT NOT NULL,
     model_hash TEXT NOT NULL,
     issued_at TEXT NOT NULL,
     deadline TEXT NOT NULL,
     state TEXT NOT NULL,
     reason TEXT,
     answered_at TEXT,
     signed_task TEXT NOT NULL,
     UNIQUE (run_id, round, attempt, site_id),
     FOREIGN KEY (run_id, round, attempt) REFERENCES rounds(run_id, round, attempt)
   );
   CREATE TABLE updates (
     id TEXT PRIMARY KEY,
     task_id TEXT NOT NULL UNIQUE REFERENCES tasks(id),
     run_id TEXT NOT NULL,
     round INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     site_id TEXT NOT NULL,
     example_count INTEGER NOT NULL,
     metrics TEXT NOT NULL,
     envelope_path TEXT NOT NULL,
     header_path TEXT NOT NULL,
     received_at TEXT NOT NULL
   );
   CREATE INDEX runs_state ON runs(state);
   CREATE INDEX tasks_round ON tasks(run_id, round, attempt);`,
  // The accepted envelope's signature, so a retry of that same envelope (its commit answer lost
  // to a crash or a cut link) is answered "accepted" again instead of refused.
  `ALTER TABLE updates ADD COLUMN signature TEXT`,
  // Updates accepted by an earlier attempt of a round that count in a later attempt of the same
  // round (same base model): one row per attempt and site, pointing at the original update.
  `CREATE TABLE carried_updates (
     run_id TEXT NOT NULL,
     round INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     site_id TEXT NOT NULL,
     update_id TEXT NOT NULL REFERENCES updates(id),
     carried_at TEXT NOT NULL,
     PRIMARY KEY (run_id, round, attempt, site_id),
     FOREIGN KEY (run_id, round, attempt) REFERENCES rounds(run_id, round, attempt)
   )`,
];

interface RunDb {
  id: string;
  name: string;
  state: string;
  config: string;
  current_round: number;
  initial_model_version: string | null;
  latest_model_version: string | null;
  reason: string | null;
  created_at: string;
  updated_at: string;
}
interface RoundDb {
  run_id: string;
  round: number;
  attempt: number;
  state: string;
  started_at: string;
  deadline: string | null;
  published_at: string | null;
  base_model_version: string;
  base_model_sha256: string;
  model_version: string | null;
  model_sha256: string | null;
  reason: string | null;
}
interface TaskDb {
  id: string;
  run_id: string;
  round: number;
  attempt: number;
  site_id: string;
  nonce: string;
  model_version: string;
  model_hash: string;
  issued_at: string;
  deadline: string;
  state: string;
  reason: string | null;
  answered_at: string | null;
  signed_task: string;
}
interface UpdateDb {
  id: string;
  task_id: string;
  run_id: string;
  round: number;
  attempt: number;
  site_id: string;
  example_count: number;
  metrics: string;
  envelope_path: string;
  header_path: string;
  received_at: string;
  signature: string | null;
}

const toRun = (r: RunDb): RunRecord => ({
  id: r.id,
  name: r.name,
  state: r.state as RunState,
  config: JSON.parse(r.config) as RunConfig,
  currentRound: r.current_round,
  initialModelVersion: r.initial_model_version,
  latestModelVersion: r.latest_model_version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  reason: r.reason,
});
const toRound = (r: RoundDb): RoundRow => ({
  runId: r.run_id,
  round: r.round,
  attempt: r.attempt,
  state: r.state as RoundRow['state'],
  startedAt: r.started_at,
  deadline: r.deadline,
  publishedAt: r.published_at,
  baseModelVersion: r.base_model_version,
  baseModelSha256: r.base_model_sha256,
  modelVersion: r.model_version,
  modelSha256: r.model_sha256,
  reason: r.reason,
});
const toTask = (r: TaskDb): TaskRow => ({
  id: r.id,
  runId: r.run_id,
  round: r.round,
  attempt: r.attempt,
  siteId: r.site_id,
  nonce: r.nonce,
  modelVersion: r.model_version,
  modelHash: r.model_hash,
  issuedAt: r.issued_at,
  deadline: r.deadline,
  state: r.state as ParticipantState,
  reason: r.reason,
  answeredAt: r.answered_at,
  signedTask: JSON.parse(r.signed_task) as SignedTask,
});
const toUpdate = (r: UpdateDb): UpdateRow => ({
  id: r.id,
  taskId: r.task_id,
  runId: r.run_id,
  round: r.round,
  attempt: r.attempt,
  siteId: r.site_id,
  exampleCount: r.example_count,
  metrics: JSON.parse(r.metrics) as Record<string, number>,
  envelopePath: r.envelope_path,
  headerPath: r.header_path,
  receivedAt: r.received_at,
  signature: r.signature,
});

const RUN_PATCH_COLUMNS = {
  state: 'state',
  currentRound: 'current_round',
  initialModelVersion: 'initial_model_version',
  latestModelVersion: 'latest_model_version',
  reason: 'reason',
} as const;
const ROUND_PATCH_COLUMNS = {
  state: 'state',
  deadline: 'deadline',
  publishedAt: 'published_at',
  modelVersion: 'model_version',
  modelSha256: 'model_sha256',
  reason: 'reason',
} as const;

/** `a = $1, b = $2` for the defined keys of a patch, with their values. */
function setClause(
  patch: Record<string, SqlParam | undefined>,
  columns: Record<string, string>,
): { sets: string[]; values: SqlParam[] } {
  const sets: string[] = [];
  const values: SqlParam[] = [];
  for (const [k, v] of Object.entries(patch)) {
    const col = columns[k];
    if (col === undefined || v === undefined) continue;
    values.push(v);
    sets.push(`${col} = $${values.length}`);
  }
  return { sets, values };
}

/**
 * Persistence of runs, round attempts, tasks and accepted updates on the coordinator's
 * {@link SqlStore}. Pure data access: no state machine logic here (that is RoundEngine's).
 * Call {@link init} once before use (migrations).
 */
export class RunRepository {
  constructor(readonly db: SqlStore) {}

  /** Applies this component's migrations. */
  async init(): Promise<this> {
    await this.db.migrate('runs', RUNS_MIGRATIONS);
    return this;
  }

  /** Runs `fn` atomically (every repository call inside joins the transaction). */
  transaction<T>(fn: () => Promise<T>): Promise<T> {
    return this.db.transaction(() => fn());
  }

  async insertRun(run: RunRecord): Promise<void> {
    await this.db.execute(
      `INSERT INTO runs (id, name, state, config, current_round, initial_model_version, latest_model_version, reason, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [
        run.id,
        run.name,
        run.state,
        JSON.stringify(run.config),
        run.currentRound,
        run.initialModelVersion,
        run.latestModelVersion,
        run.reason,
        run.createdAt,
        run.updatedAt,
      ],
    );
  }

  async getRun(id: string): Promise<RunRecord | undefined> {
    const row = await this.db.one<RunDb>('SELECT * FROM runs WHERE id = $1', [id]);
    return row && toRun(row);
  }

  /** All runs (or those in one state), oldest first. */
  async listRuns(state?: RunState): Promise<RunRecord[]> {
    const rows =
      state === undefined
        ? await this.db.query<RunDb>('SELECT * FROM runs ORDER BY created_at, id')
        : await this.db.query<RunDb>('SELECT * FROM runs WHERE state = $1 ORDER BY created_at, id', [state]);
    return rows.map(toRun);
  }

  async updateRun(
    id: string,
    patch: Partial<
      Pick<RunRecord, 'state' | 'currentRound' | 'initialModelVersion' | 'latestModelVersion' | 'reason'>
    >,
    now: string,
  ): Promise<void> {
    const { sets, values } = setClause(patch, RUN_PATCH_COLUMNS);
    values.push(now, id);
    sets.push(`updated_at = $${values.length - 1}`);
    await this.db.execute(`UPDATE runs SET ${sets.join(', ')} WHERE id = $${values.length}`, values);
  }

  /**
   * Moves a run from one of `from` to `to` (and sets `reason`) only if it is still in one of
   * `from`; returns false when another caller changed it first (compare-and-set).
   */
  async transitionRun(
    id: string,
    from: readonly RunState[],
    to: RunState,
    reason: string | null,
    now: string,
  ): Promise<boolean> {
    const marks = from.map((_s, i) => `$${i + 5}`).join(', ');
    const r = await this.db.execute(
      `UPDATE runs SET state = $1, reason = $2, updated_at = $3 WHERE id = $4 AND state IN (${marks})`,
      [to, reason, now, id, ...from],
    );
    return r.rowCount === 1;
  }

  async insertRound(row: RoundRow): Promise<void> {
    await this.db.execute(
      `INSERT INTO rounds (run_id, round, attempt, state, started_at, deadline, published_at, base_model_version, base_model_sha256, model_version, model_sha256, reason)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [
        row.runId,
        row.round,
        row.attempt,
        row.state,
        row.startedAt,
        row.deadline,
        row.publishedAt,
        row.baseModelVersion,
        row.baseModelSha256,
        row.modelVersion,
        row.modelSha256,
        row.reason,
      ],
    );
  }

  async updateRound(
    runId: string,
    round: number,
    attempt: number,
    patch: Partial<
      Pick<RoundRow, 'state' | 'deadline' | 'publishedAt' | 'modelVersion' | 'modelSha256' | 'reason'>
    >,
  ): Promise<void> {
    const { sets, values } = setClause(patch, ROUND_PATCH_COLUMNS);
    if (sets.length === 0) return;
    const n = values.length;
    await this.db.execute(
      `UPDATE rounds SET ${sets.join(', ')} WHERE run_id = $${n + 1} AND round = $${n + 2} AND attempt = $${n + 3}`,
      [...values, runId, round, attempt],
    );
  }

  async getRound(runId: string, round: number, attempt: number): Promise<RoundRow | undefined> {
    const row = await this.db.one<RoundDb>(
      'SELECT * FROM rounds WHERE run_id = $1 AND round = $2 AND attempt = $3',
      [runId, round, attempt],
    );
    return row && toRound(row);
  }

  /** The newest attempt of the newest round of a run. */
  async latestRound(runId: string): Promise<RoundRow | undefined> {
    const row = await this.db.one<RoundDb>(
      'SELECT * FROM rounds WHERE run_id = $1 ORDER BY round DESC, attempt DESC LIMIT 1',
      [runId],
    );
    return row && toRound(row);
  }

  /** Every attempt of every round of a run, in order. */
  async listRounds(runId: string): Promise<RoundRow[]> {
    return (
      await this.db.query<RoundDb>('SELECT * FROM rounds WHERE run_id = $1 ORDER BY round, attempt', [runId])
    ).map(toRound);
  }

  async insertTask(task: TaskRow): Promise<void> {
    await this.db.execute(
      `INSERT INTO tasks (id, run_id, round, attempt, site_id, nonce, model_version, model_hash, issued_at, deadline, state, reason, answered_at, signed_task)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
      [
        task.id,
        task.runId,
        task.round,
        task.attempt,
        task.siteId,
        task.nonce,
        task.modelVersion,
        task.modelHash,
        task.issuedAt,
        task.deadline,
        task.state,
        task.reason,
        task.answeredAt,
        JSON.stringify(task.signedTask),
      ],
    );
  }

  async getTask(id: string): Promise<TaskRow | undefined> {
    const row = await this.db.one<TaskDb>('SELECT * FROM tasks WHERE id = $1', [id]);
    return row && toTask(row);
  }

  /** Tasks of one round attempt, in siteId order. */
  async listTasks(runId: string, round: number, attempt: number): Promise<TaskRow[]> {
    return (
      await this.db.query<TaskDb>(
        'SELECT * FROM tasks WHERE run_id = $1 AND round = $2 AND attempt = $3 ORDER BY site_id',
        [runId, round, attempt],
      )
    ).map(toTask);
  }

  /** Every task still waiting for an answer, across runs, oldest first. */
  async listOfferedTasks(): Promise<TaskRow[]> {
    return (
      await this.db.query<TaskDb>("SELECT * FROM tasks WHERE state = 'offered' ORDER BY issued_at, id")
    ).map(toTask);
  }

  /**
   * Records the answer of a task that is still `offered`; returns false (and changes
   * nothing) if it was already answered, so an answer can never be overwritten.
   */
  async answerTask(
    id: string,
    state: Exclude<ParticipantState, 'offered'>,
    reason: string | null,
    at: string,
  ): Promise<boolean> {
    const res = await this.db.execute(
      `UPDATE tasks SET state = $1, reason = $2, answered_at = $3 WHERE id = $4 AND state = 'offered'`,
      [state, reason, at, id],
    );
    return res.rowCount === 1;
  }

  async insertUpdate(update: UpdateRow): Promise<void> {
    await this.db.execute(
      `INSERT INTO updates (id, task_id, run_id, round, attempt, site_id, example_count, metrics, envelope_path, header_path, received_at, signature)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [
        update.id,
        update.taskId,
        update.runId,
        update.round,
        update.attempt,
        update.siteId,
        update.exampleCount,
        JSON.stringify(update.metrics),
        update.envelopePath,
        update.headerPath,
        update.receivedAt,
        update.signature ?? null,
      ],
    );
  }

  /** Accepted updates of one round attempt, in siteId order (the aggregation order). */
  async listUpdates(runId: string, round: number, attempt: number): Promise<UpdateRow[]> {
    return (
      await this.db.query<UpdateDb>(
        'SELECT * FROM updates WHERE run_id = $1 AND round = $2 AND attempt = $3 ORDER BY site_id',
        [runId, round, attempt],
      )
    ).map(toUpdate);
  }

  /**
   * Records that `updateId`, accepted in an earlier attempt of the round, counts in attempt
   * `attempt`. Fails (primary key) if the site already has a carried update in that attempt.
   */
  async insertCarriedUpdate(c: {
    runId: string;
    round: number;
    attempt: number;
    siteId: string;
    updateId: string;
    carriedAt: string;
  }): Promise<void> {
    await this.db.execute(
      `INSERT INTO carried_updates (run_id, round, attempt, site_id, update_id, carried_at)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [c.runId, c.round, c.attempt, c.siteId, c.updateId, c.carriedAt],
    );
  }

  /**
   * Updates carried into one round attempt from earlier attempts, in siteId order. Each row is
   * the original update (its `attempt` is the attempt that accepted it).
   */
  async listCarriedUpdates(runId: string, round: number, attempt: number): Promise<UpdateRow[]> {
    return (
      await this.db.query<UpdateDb>(
        `SELECT u.* FROM carried_updates c JOIN updates u ON u.id = c.update_id
         WHERE c.run_id = $1 AND c.round = $2 AND c.attempt = $3 ORDER BY c.site_id`,
        [runId, round, attempt],
      )
    ).map(toUpdate);
  }

  /**
   * Every update that counts in one round attempt: those it accepted and those carried into it,
   * in siteId order (the aggregation order).
   */
  async listRoundUpdates(runId: string, round: number, attempt: number): Promise<UpdateRow[]> {
    // One ORDER BY over both, so the order is the store's site_id order as in listUpdates.
    return (
      await this.db.query<UpdateDb>(
        `SELECT * FROM (
           SELECT * FROM updates WHERE run_id = $1 AND round = $2 AND attempt = $3
           UNION ALL
           SELECT u.* FROM carried_updates c JOIN updates u ON u.id = c.update_id
           WHERE c.run_id = $1 AND c.round = $2 AND c.attempt = $3
         ) AS counted ORDER BY site_id`,
        [runId, round, attempt],
      )
    ).map(toUpdate);
  }

  async getUpdateByTask(taskId: string): Promise<UpdateRow | undefined> {
    const row = await this.db.one<UpdateDb>('SELECT * FROM updates WHERE task_id = $1', [taskId]);
    return row && toUpdate(row);
  }

  /** Total number of accepted updates (diagnostics and tests). */
  async countUpdates(): Promise<number> {
    return (await this.db.one<{ n: number }>('SELECT CAST(COUNT(*) AS INTEGER) AS n FROM updates'))?.n ?? 0;
  }
}
