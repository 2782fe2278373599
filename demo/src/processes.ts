import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';

/** Absolute paths of the built command-line programs, from this checkout. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const BINS = {
  coordinator: path.join(REPO_ROOT, 'coordinator', 'dist', 'cli', 'coordinator-cli.js'),
  admin: path.join(REPO_ROOT, 'coordinator', 'dist', 'cli', 'admin-cli.js'),
  agent: path.join(REPO_ROOT, 'site-agent', 'dist', 'cli', 'agent-cli.js'),
} as const;

/** One pino JSON log line as parsed from a child's stdout (non-JSON lines keep their text in `msg`). */
export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

/**
 * A child process whose stdout is read line by line as pino JSON, so callers can wait for a
 * log line instead of sleeping. stderr is kept for error reports.
 */
export class ManagedProcess {
  readonly lines: LogLine[] = [];
  readonly stderr: string[] = [];
  private readonly waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitWaiters: ((info: { code: number | null; signal: NodeJS.Signals | null }) => void)[] =
    [];

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    private readonly onLine?: (name: string, line: LogLine) => void,
  ) {
    createInterface({ input: child.stdout! }).on('line', (text) => this.accept(text));
    createInterface({ input: child.stderr! }).on('line', (text) => this.stderr.push(text));
    child.on('exit', (code, signal) => {
      this.exitInfo = { code, signal };
      for (const w of this.exitWaiters.splice(0)) w(this.exitInfo);
    });
  }

  private accept(text: string): void {
    let line: LogLine;
    try {
      const parsed: unknown = JSON.parse(text);
      line = typeof parsed === 'object' && parsed !== null ? (parsed as LogLine) : { msg: text };
    } catch {
      line = { msg: text };
    }
    this.lines.push(line);
    this.onLine?.(this.name, line);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.match(line)) {
        this.waiters.splice(i, 1);
        w.resolve(line);
      }
    }
  }

  /** Resolves with the first line (past or future) that matches; rejects if the process exits first. */
  waitForLine(match: (l: LogLine) => boolean, what: string, timeoutMs = 60_000): Promise<LogLine> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => fail(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}`)),
        timeoutMs,
      );
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      this.waiters.push({
        match,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      this.onExit().then((info) =>
        fail(
          new Error(
            `${this.name} exited (code ${info.code}, signal ${info.signal}) before ${what}\n${this.tail()}`,
          ),
        ),
      );
    });
  }

  onExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.exitInfo) return Promise.resolve(this.exitInfo);
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** The last lines of stderr and stdout, for error messages. */
  tail(n = 15): string {
    const out = this.lines.slice(-n).map((l) => JSON.stringify(l));
    return [...this.stderr.slice(-n), ...out].join('\n');
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.onExit();
    clearTimeout(timer);
  }
}

/** Starts `node <script> <args>` as a managed process. */
export function startNode(
  name: string,
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  onLine?: (name: string, line: LogLine) => void,
): ManagedProcess {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new ManagedProcess(name, child, onLine);
}

/** Runs `node <script> <args>` to completion; rejects with its stderr if it exits non-zero. */
export function runNode(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) resolve({ stdout, stderr });
      else
        reject(
          new Error(
            `${path.basename(script)} ${args.join(' ')} exited with ${code}: ${stderr.trim() || stdout.trim()}`,
          ),
        );
    });
  });
}
