import { readFileSync, renameSync } from 'node:fs';

/**
 * Fault injection for the fault-tolerance tests (test/faults/), inert in production.
 *
 * Armed only when the process starts with `FEDSSL_FAULT_FILE=<path>`; this module is the
 * one place that reads it. At each named fault point the file is read (if it exists): a
 * JSON object `{point, action, runId?, round?}` whose `point` (and `runId`/`round`, when
 * given) match fires once — the file is renamed to `<path>.fired` first, so a restarted
 * process does not fire again. Actions:
 *   - `crash`: SIGKILL this process on the spot (a power cut as far as disk and store see it);
 *   - `enospc`: throw an ENOSPC error, as a full disk would, where the point writes.
 * The test arms a point by writing the file while the coordinator runs.
 */

/** Where faults can be injected. */
export type FaultPoint =
  /** Round marked aggregating, before any update is read. */
  | 'aggregation.before-publish'
  /** Model version published on disk, before the round is marked published in the store. */
  | 'aggregation.after-publish'
  /** Before an upload chunk is written to its part file. */
  | 'upload.chunk-write';

interface Armed {
  point: FaultPoint;
  action: 'crash' | 'enospc';
  runId?: string;
  round?: number;
}

const FAULT_FILE = process.env.FEDSSL_FAULT_FILE;

/** What a fault point is about (matched against the armed fault's optional filters). */
export interface FaultContext {
  runId?: string;
  round?: number;
}

/**
 * Fires the armed fault if it matches this point. Without FEDSSL_FAULT_FILE it returns at
 * once; with it, it reads one small file (tests only).
 * @throws an ENOSPC-coded Error for the `enospc` action.
 */
export function faultPoint(point: FaultPoint, ctx: FaultContext = {}): void {
  if (!FAULT_FILE) return;
  let armed: Armed;
  try {
    armed = JSON.parse(readFileSync(FAULT_FILE, 'utf8')) as Armed;
  } catch {
    return; // not armed (yet)
  }
  if (armed.point !== point) return;
  if (armed.runId !== undefined && armed.runId !== ctx.runId) return;
  if (armed.round !== undefined && armed.round !== ctx.round) return;
  renameSync(FAULT_FILE, `${FAULT_FILE}.fired`);
  if (armed.action === 'crash') process.kill(process.pid, 'SIGKILL');
  if (armed.action === 'enospc') {
    throw Object.assign(new Error(`ENOSPC: no space left on device (injected at ${point})`), {
      code: 'ENOSPC',
    });
  }
}
