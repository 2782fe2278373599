import type { Database } from '../store/database';
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
});

/**
 * Persistence of runs, round attempts, tasks and accepted updates on the coordinator's
 * Database. Pure data access: no state machine logic here (that is RoundEngine's).
 */
export class RunRepository {
  constructor(readonly db: Database) {
    db.migrate('runs', RUNS_MIGRATIONS);
  }

  /** Runs `fn` atomically. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn);
  }

  insertRun(run: RunRecord): void {
    this.db.sqlite
      .prepare(
        `INSERT INTO runs (id, name, state, config, current_round, initial_model_version, latest_model_version, reason, created_at, updated_at)
         VALUES (@id, @name, @state, @config, @currentRound, @initialModelVersion, @latestModelVersion, @reason, @createdAt, @updatedAt)`,
      )
      .run({ ...run, config: JSON.stringify(run.config) });
  }

  getRun(id: string): RunRecord | undefined {
    const row = this.db.sqlite.prepare('SELECT * FROM runs WHERE id = ?').get(id) as RunDb | undefined;
    return row && toRun(row);
  }

  /** All runs, oldest first. */
  listRuns(state?: RunState): RunRecord[] {
    const rows = (
      state === undefined
        ? this.db.sqlite.prepare('SELECT * FROM runs ORDER BY created_at, id').all()
        : this.db.sqlite.prepare('SELECT * FROM runs WHERE state = ? ORDER BY created_at, id').all(state)
    ) as RunDb[];
    return rows.map(toRun);
  }

  updateRun(
    id: string,
    patch: Partial<
      Pick<RunRecord, 'state' | 'currentRound' | 'initialModelVersion' | 'latestModelVersion' | 'reason'>
    >,
    now: string,
  ): void {
    const cols: Record<string, string> = {
      state: 'state',
      currentRound: 'current_round',
      initialModelVersion: 'initial_model_version',
      latestModelVersion: 'latest_model_version',
      reason: 'reason',
    };
    const sets = Object.keys(patch).map((k) => `${cols[k]} = @${k}`);
    this.db.sqlite
      .prepare(`UPDATE runs SET ${[...sets, 'updated_at = @now'].join(', ')} WHERE id = @id`)
      .run({ ...patch, now, id });
  }

  insertRound(row: RoundRow): void {
    this.db.sqlite
      .prepare(
        `INSERT INTO rounds (run_id, round, attempt, state, started_at, deadline, published_at, base_model_version, base_model_sha256, model_version, model_sha256, reason)
         VALUES (@runId, @round, @attempt, @state, @startedAt, @deadline, @publishedAt, @baseModelVersion, @baseModelSha256, @modelVersion, @modelSha256, @reason)`,
      )
      .run(row);
  }

  updateRound(
    runId: string,
    round: number,
    attempt: number,
    patch: Partial<
      Pick<RoundRow, 'state' | 'deadline' | 'publishedAt' | 'modelVersion' | 'modelSha256' | 'reason'>
    >,
  ): void {
    const cols: Record<string, string> = {
      state: 'state',
      deadline: 'deadline',
      publishedAt: 'published_at',
      modelVersion: 'model_version',
      modelSha256: 'model_sha256',
      reason: 'reason',
    };
    const sets = Object.keys(patch).map((k) => `${cols[k]} = @${k}`);
    if (sets.length === 0) return;
    this.db.sqlite
      .prepare(
        `UPDATE rounds SET ${sets.join(', ')} WHERE run_id = @runId AND round = @round AND attempt = @attempt`,
      )
      .run({ ...patch, runId, round, attempt });
  }

  getRound(runId: string, round: number, attempt: number): RoundRow | undefined {
    const row = this.db.sqlite
      .prepare('SELECT * FROM rounds WHERE run_id = ? AND round = ? AND attempt = ?')
      .get(runId, round, attempt) as RoundDb | undefined;
    return row && toRound(row);
  }

  /** The newest attempt of the newest round of a run. */
  latestRound(runId: string): RoundRow | undefined {
    const row = this.db.sqlite
      .prepare('SELECT * FROM rounds WHERE run_id = ? ORDER BY round DESC, attempt DESC LIMIT 1')
      .get(runId) as RoundDb | undefined;
    return row && toRound(row);
  }

  /** Every attempt of every round of a run, in order. */
  listRounds(runId: string): RoundRow[] {
    return (
      this.db.sqlite
        .prepare('SELECT * FROM rounds WHERE run_id = ? ORDER BY round, attempt')
        .all(runId) as RoundDb[]
    ).map(toRound);
  }

  insertTask(task: TaskRow): void {
    this.db.sqlite
      .prepare(
        `INSERT INTO tasks (id, run_id, round, attempt, site_id, nonce, model_version, model_hash, issued_at, deadline, state, reason, answered_at, signed_task)
         VALUES (@id, @runId, @round, @attempt, @siteId, @nonce, @modelVersion, @modelHash, @issuedAt, @deadline, @state, @reason, @answeredAt, @signedTask)`,
      )
      .run({ ...task, signedTask: JSON.stringify(task.signedTask) });
  }

  getTask(id: string): TaskRow | undefined {
    const row = this.db.sqlite.prepare('SELECT * FROM tasks WHERE id = ?').get(id) as TaskDb | undefined;
    return row && toTask(row);
  }

  /** Tasks of one round attempt, in siteId order. */
  listTasks(runId: string, round: number, attempt: number): TaskRow[] {
    return (
      this.db.sqlite
        .prepare('SELECT * FROM tasks WHERE run_id = ? AND round = ? AND attempt = ? ORDER BY site_id')
        .all(runId, round, attempt) as TaskDb[]
    ).map(toTask);
  }

  /**
   * Records the answer of a task that is still `offered`; returns false (and changes
   * nothing) if it was already answered, so an answer can never be overwritten.
   */
  answerTask(
    id: string,
    state: Exclude<ParticipantState, 'offered'>,
    reason: string | null,
    at: string,
  ): boolean {
    const res = this.db.sqlite
      .prepare(`UPDATE tasks SET state = ?, reason = ?, answered_at = ? WHERE id = ? AND state = 'offered'`)
      .run(state, reason, at, id);
    return res.changes === 1;
  }

  insertUpdate(update: UpdateRow): void {
    this.db.sqlite
      .prepare(
        `INSERT INTO updates (id, task_id, run_id, round, attempt, site_id, example_count, metrics, envelope_path, header_path, received_at)
         VALUES (@id, @taskId, @runId, @round, @attempt, @siteId, @exampleCount, @metrics, @envelopePath, @headerPath, @receivedAt)`,
      )
      .run({ ...update, metrics: JSON.stringify(update.metrics) });
  }

  /** Accepted updates of one round attempt, in siteId order (the aggregation order). */
  listUpdates(runId: string, round: number, attempt: number): UpdateRow[] {
    return (
      this.db.sqlite
        .prepare('SELECT * FROM updates WHERE run_id = ? AND round = ? AND attempt = ? ORDER BY site_id')
        .all(runId, round, attempt) as UpdateDb[]
    ).map(toUpdate);
  }

  getUpdateByTask(taskId: string): UpdateRow | undefined {
    const row = this.db.sqlite.prepare('SELECT * FROM updates WHERE task_id = ?').get(taskId) as
      UpdateDb | undefined;
    return row && toUpdate(row);
  }

  /** Total number of accepted updates (diagnostics and tests). */
  countUpdates(): number {
    return (this.db.sqlite.prepare('SELECT COUNT(*) AS n FROM updates').get() as { n: number }).n;
  }
}
