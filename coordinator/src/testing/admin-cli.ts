import { runAdminCli } from '../cli/admin-cli';

/** What one `fedssl-admin` invocation printed, and its exit code. */
export interface CliRun {
  code: number;
  out: string;
  err: string;
}

/**
 * Test support: runs `fedssl-admin argv` in process against `url` with `token`, capturing its output.
 * @example expect((await runAdminCliAt(c.url, admin, ['keys', 'show'])).code).toBe(0);
 */
export async function runAdminCliAt(url: string, token: string, argv: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await runAdminCli(argv, {
    io: { stdout: (t) => void (out += t), stderr: (t) => void (err += t) },
    env: { FEDSSL_URL: url, FEDSSL_ADMIN_TOKEN: token },
  });
  return { code, out, err };
}
