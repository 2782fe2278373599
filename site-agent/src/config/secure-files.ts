import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';

/**
 * File helpers for the agent home: everything in it is private to the agent's user
 * (files 0600, folders 0700), and files are replaced atomically so a crash mid-write
 * never leaves a half-written key or config behind.
 */

export const SECURE_FILE_MODE = 0o600;
export const SECURE_DIR_MODE = 0o700;

/** Create `dir` (and parents) if missing and force its mode to 0700. */
export async function ensureSecureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: SECURE_DIR_MODE });
  // mkdir's mode is filtered by the umask and ignored for existing folders.
  await chmod(dir, SECURE_DIR_MODE);
}

/**
 * Atomically write `data` to `path` with mode 0600: write a temporary sibling (created
 * 0600 from the start, so the content is never readable by others), fsync, rename.
 */
export async function writeSecureFile(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', SECURE_FILE_MODE);
  try {
    await fh.writeFile(data);
    await fh.chmod(SECURE_FILE_MODE);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

/**
 * Append one line to `path` (created 0600 if missing). Used for the upload ledger,
 * which is append-only by design.
 */
export async function appendSecureLine(path: string, line: string): Promise<void> {
  const fh = await open(path, 'a', SECURE_FILE_MODE);
  try {
    await fh.appendFile(line.endsWith('\n') ? line : `${line}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** True when `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Permission bits of `path` (e.g. 0o600). */
export async function fileMode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}
