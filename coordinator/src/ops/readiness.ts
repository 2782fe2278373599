import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SqlExecutor } from '../store/sql-store';

/** One readiness check's outcome; `error` says what failed (no secrets, no patient data). */
export interface CheckResult {
  ok: boolean;
  error?: string;
}

export interface Readiness {
  status: 'ready' | 'not ready';
  checks: { store: CheckResult; dataDir: CheckResult; keys: CheckResult };
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * Readiness: the store answers `SELECT 1`, a probe file can be written in the data dir, and
 * the coordinator's signing and box keys are loaded. Every check runs; any failure → not ready.
 */
export async function checkReadiness(deps: {
  store: SqlExecutor;
  dataDir: string;
  keysLoaded: () => boolean;
}): Promise<Readiness> {
  const store = await deps.store.one<{ ok: number }>('SELECT 1 AS ok').then(
    (r): CheckResult =>
      Number(r?.ok) === 1 ? { ok: true } : { ok: false, error: 'SELECT 1 returned no row' },
    (e: unknown): CheckResult => ({ ok: false, error: `store query failed: ${message(e)}` }),
  );
  let dataDir: CheckResult = { ok: true };
  const probe = join(deps.dataDir, `.readyz-${randomBytes(6).toString('hex')}`);
  try {
    writeFileSync(probe, 'ok');
    rmSync(probe, { force: true });
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    dataDir = {
      ok: false,
      error: `data dir is not writable (${typeof code === 'string' ? code : message(e)})`,
    };
  }
  let keys: CheckResult = { ok: true };
  try {
    if (!deps.keysLoaded()) keys = { ok: false, error: 'coordinator keys are not loaded' };
  } catch (e) {
    keys = { ok: false, error: `coordinator keys are not loaded: ${message(e)}` };
  }
  const ready = store.ok && dataDir.ok && keys.ok;
  return { status: ready ? 'ready' : 'not ready', checks: { store, dataDir, keys } };
}
