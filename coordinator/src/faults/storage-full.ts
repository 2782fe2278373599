import { FedsslError } from '@fedssl/shared/errors';

/**
 * Error codes meaning "out of space": file systems (ENOSPC, EDQUOT), SQLite (SQLITE_FULL)
 * and PostgreSQL (SQLSTATE 53100 disk_full).
 */
const OUT_OF_SPACE = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL', '53100']);

/** True when `e` is a write that failed because the disk (or quota, or database) is full. */
export function isOutOfSpace(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && OUT_OF_SPACE.has(code);
}

/**
 * Runs a write; an out-of-space failure becomes STORAGE_FULL saying what could not be
 * written and what to do. Other errors pass through unchanged.
 * @throws FedsslError STORAGE_FULL
 */
export function whenOutOfSpace<T>(what: string, write: () => T): T {
  try {
    return write();
  } catch (e) {
    if (!isOutOfSpace(e)) throw e;
    throw new FedsslError(
      'STORAGE_FULL',
      `coordinator out of space writing ${what}; free space in FEDSSL_DATA_DIR (or the database volume), nothing accepted was lost`,
      { cause: (e as { code: string }).code },
    );
  }
}
