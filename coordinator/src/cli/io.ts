/** Where a CLI writes: injected so commands run in-process in tests. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** The process's real streams. */
export const processIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

/** A failure the CLI reports as one line and a non-zero exit. */
export class CliError extends Error {
  constructor(
    /** Server error code (e.g. ADMIN_FORBIDDEN) or a local one (e.g. MODEL_HASH_MISMATCH). */
    readonly code: string,
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** `error: CODE: message` — the single stderr line every CLI failure prints. */
export function formatCliError(e: unknown): string {
  if (e instanceof CliError) return `error: ${e.code}: ${e.message}\n`;
  const code = (e as { code?: unknown } | null)?.code;
  const msg = e instanceof Error ? e.message : String(e);
  return typeof code === 'string' && /^[A-Z_]+$/.test(code) ? `error: ${code}: ${msg}\n` : `error: ${msg}\n`;
}
