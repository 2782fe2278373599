import { randomBytes } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import type { Logger } from 'pino';
import {
  fingerprint,
  followCoordinatorKeyChain,
  fromBase64,
  type FollowedKeyChain,
} from '@fedssl/shared/crypto';
import { isFedsslError } from '@fedssl/shared/errors';
import { coordinatorKeyChainSchema, type CoordinatorKeys } from '@fedssl/shared/protocol';
import {
  agentPaths,
  loadAgentConfig,
  type AgentConfig,
  type BackendPreference,
} from '../config/agent-config';
import { fileMode } from '../config/secure-files';
import { loadTrainingDataset } from '../data/load-dataset';
import type { CliIo } from './commands';
import { describeFetchFailure } from './fetch-failure';
import { coordinatorKeysAnswer } from './rest-answers';

/** One check of `fedssl-agent doctor`. */
export interface DoctorCheck {
  name: string;
  status: 'pass' | 'warn' | 'fail';
  detail: string;
  /** What to do about a warn/fail. */
  fix?: string;
}

export interface DoctorOptions {
  home: string;
  /** Check this data path instead of the configured one. */
  data?: string;
  backend?: BackendPreference;
  json?: boolean;
  logger: Logger;
  fetchImpl?: typeof fetch;
  /** Milliseconds clock (tests). */
  now?: () => number;
  /** Free disk below this fails (default 1 GiB). */
  minFreeBytes?: number;
  /** |clock skew| above this fails (default 30 s; task deadlines and signatures carry times). */
  maxSkewSeconds?: number;
  timeoutMs?: number;
}

const GiB = 1024 ** 3;

async function check(name: string, fn: () => Promise<Omit<DoctorCheck, 'name'>>): Promise<DoctorCheck> {
  try {
    return { name, ...(await fn()) };
  } catch (e) {
    return {
      name,
      status: 'fail',
      detail: isFedsslError(e) ? `[${e.code}] ${e.message}` : (e as Error).message,
      fix: 'see the detail above',
    };
  }
}

/**
 * `fedssl-agent doctor`: checks what a site needs before it can take part, each with a
 * pass/warn/fail and the fix: config, data readable, training backend (and GPU), free disk,
 * key files present with mode 0600, enrollment with pinned coordinator keys, coordinator
 * reachable, the coordinator still presenting the pinned keys, and clock skew against the
 * coordinator's HTTP `Date` header. Exit code 0 when nothing failed, 1 otherwise.
 */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorCheck[]> {
  const paths = agentPaths(opts.home);
  const now = opts.now ?? (() => Date.now());
  const doFetch = opts.fetchImpl ?? fetch;
  const checks: DoctorCheck[] = [];
  let config: AgentConfig | undefined;

  checks.push(
    await check('config', async () => {
      config = await loadAgentConfig(opts.home);
      return { status: 'pass', detail: paths.config };
    }),
  );
  if (checks[0]!.status === 'fail')
    checks[0]!.fix = 'run `fedssl-agent init --home <dir> --data <path>` first';

  checks.push(
    await check('data', async () => {
      const path = opts.data ?? config?.data.path;
      if (!path) return { status: 'fail', detail: 'no data path configured', fix: 'pass --data or run init' };
      try {
        const { report } = await loadTrainingDataset({
          path,
          ...(opts.data === undefined && config?.data.manifest !== undefined
            ? { manifest: config.data.manifest }
            : {}),
          ...(opts.data === undefined && config ? { patientColumn: config.data.patientColumn } : {}),
          imageSize: 8,
          secret: new Uint8Array(randomBytes(32)),
        });
        const skipped = report.skipped.reduce((s, x) => s + x.count, 0);
        return {
          status: skipped > 0 ? 'warn' : 'pass',
          detail: `${report.images} images readable, ${report.patients} identified patients${skipped ? `, ${skipped} files skipped` : ''}`,
          ...(skipped ? { fix: 'run `fedssl-agent check-data` to see why files were skipped' } : {}),
        };
      } catch (e) {
        return {
          status: 'fail',
          detail: isFedsslError(e) ? `[${e.code}] ${e.message}` : (e as Error).message,
          fix: 'point the agent at a readable folder of images (config.json data.path, or --data) and check its permissions',
        };
      }
    }),
  );

  checks.push(
    await check('backend', async () => {
      const { selectBackend } = await import('../train/backend.js');
      const b = await selectBackend(opts.logger, opts.backend ?? config?.backend ?? 'auto');
      return b.accelerator === 'gpu'
        ? { status: 'pass', detail: `${b.name} on GPU` }
        : {
            status: 'warn',
            detail: `${b.name} on CPU (no GPU backend)${b.native ? '' : '; native libtensorflow not loaded'}`,
            fix: 'training works but is slow; for a GPU install @tensorflow/tfjs-node-gpu with CUDA 11.2 + cuDNN 8.1',
          };
    }),
  );

  checks.push(
    await check('disk', async () => {
      const s = await statfs(opts.home);
      const free = s.bavail * s.bsize;
      const min = opts.minFreeBytes ?? GiB;
      const detail = `${(free / GiB).toFixed(1)} GiB free in ${paths.home}`;
      return free >= min
        ? { status: 'pass', detail }
        : {
            status: 'fail',
            detail,
            fix: `free at least ${(min / GiB).toFixed(1)} GiB (models, checkpoints, state)`,
          };
    }),
  );

  for (const [name, file] of [
    ['site keys', paths.keys],
    ['pseudonym secret', paths.pseudonymSecret],
  ] as const) {
    checks.push(
      await check(name, async () => {
        let mode: number;
        try {
          mode = await fileMode(file);
        } catch {
          return { status: 'fail', detail: `${file} is missing`, fix: 'run `fedssl-agent init`' };
        }
        return mode === 0o600
          ? { status: 'pass', detail: `${file} (0600)` }
          : {
              status: 'fail',
              detail: `${file} has mode 0${mode.toString(8)}, other users may read it`,
              fix: `chmod 600 ${file}`,
            };
      }),
    );
  }

  const enrolled = config?.siteId && config.coordinatorUrl && config.coordinator ? config : undefined;
  checks.push({
    name: 'enrolled, coordinator keys pinned',
    ...(enrolled
      ? {
          status: 'pass' as const,
          detail: `site ${enrolled.siteId} at ${enrolled.coordinatorUrl}, pinned fingerprint ${enrolled.coordinator!.fingerprint}`,
        }
      : {
          status: 'fail' as const,
          detail: 'not enrolled: no coordinator keys are pinned',
          fix: 'run `fedssl-agent enroll --coordinator <url> --token <token>`',
        }),
  });

  if (enrolled) {
    const base = `${enrolled.coordinatorUrl!.replace(/\/+$/, '')}/api/v1`;
    let reachable = false;
    let skewCheck: DoctorCheck | undefined;
    checks.push(
      await check('coordinator reachable', async () => {
        const t0 = now();
        let res: Response;
        try {
          res = await doFetch(`${base}/healthz`, { signal: AbortSignal.timeout(opts.timeoutMs ?? 5000) });
        } catch (e) {
          const why = describeFetchFailure(e, base);
          return { status: 'fail', detail: `cannot reach ${base}/healthz: ${why.reason}`, fix: why.fix };
        }
        const t1 = now();
        if (!res.ok) {
          return {
            status: 'fail',
            detail: `${base}/healthz answered HTTP ${res.status}`,
            fix: 'ask the consortium admin whether the coordinator is up',
          };
        }
        reachable = true;
        const date = res.headers.get('date');
        const server = date ? Date.parse(date) : NaN;
        const rtt = t1 - t0;
        // The Date header has 1 s resolution and was stamped somewhere within the round trip.
        const skew = (server - (t0 + t1) / 2) / 1000;
        const max = opts.maxSkewSeconds ?? 30;
        skewCheck = !Number.isFinite(skew)
          ? {
              name: 'clock skew',
              status: 'warn',
              detail: 'the coordinator sent no Date header',
              fix: 'make sure this host syncs its clock (NTP)',
            }
          : Math.abs(skew) <= max
            ? {
                name: 'clock skew',
                status: 'pass',
                detail: `${skew.toFixed(1)} s (±1 s) against the coordinator`,
              }
            : {
                name: 'clock skew',
                status: 'fail',
                detail: `this clock is ${Math.abs(skew).toFixed(0)} s ${skew > 0 ? 'behind' : 'ahead of'} the coordinator`,
                fix: 'enable NTP time sync (e.g. `timedatectl set-ntp true`) on this host',
              };
        return { status: 'pass', detail: `${base} answered in ${Math.round(rtt)} ms` };
      }),
    );
    if (skewCheck) checks.push(skewCheck);
    if (reachable) {
      checks.push(
        await check('coordinator keys match the pinned ones', async () => {
          const res = await doFetch(`${base}/coordinator/keys`, {
            signal: AbortSignal.timeout(opts.timeoutMs ?? 5000),
          });
          const keys = coordinatorKeysAnswer.parse(await res.json());
          const fp = fingerprint(fromBase64(keys.signingPublicKey, 32), fromBase64(keys.boxPublicKey, 32));
          if (fp === enrolled.coordinator!.fingerprint)
            return { status: 'pass', detail: `fingerprint ${fp}` };
          // A rotation the agent has not followed yet is fine if the pinned key signed the way there.
          const followed = await followedRotation(base, doFetch, enrolled.coordinator!, opts.timeoutMs);
          if (followed && followed.keys.fingerprint === fp) {
            return {
              status: 'warn',
              detail: `the coordinator rotated its keys (pinned ${enrolled.coordinator!.keyId} -> ${followed.keys.keyId}, ${followed.followed.length} announcement(s) signed by the pinned key); the agent follows on its next connection`,
              fix: 'none needed; compare the new fingerprint with `fedssl-coordinator fingerprint` if in doubt',
            };
          }
          return {
            status: 'fail',
            detail: `the coordinator now presents fingerprint ${fp}, pinned is ${enrolled.coordinator!.fingerprint}, and no announcement signed by the pinned key leads to it`,
            fix: 'do not train: ask the consortium admin out of band whether the coordinator keys were replaced; re-enroll only then',
          };
        }),
      );
    }
  }
  return checks;
}

/** The coordinator's key chain followed from the pinned keys, or null when it is missing or refused. */
async function followedRotation(
  base: string,
  doFetch: typeof fetch,
  pinned: CoordinatorKeys,
  timeoutMs?: number,
): Promise<FollowedKeyChain | null> {
  try {
    const res = await doFetch(`${base}/coordinator/keys/chain`, {
      signal: AbortSignal.timeout(timeoutMs ?? 5000),
    });
    const chain = coordinatorKeyChainSchema.parse(await res.json());
    return followCoordinatorKeyChain(pinned, chain.chain);
  } catch {
    return null;
  }
}

/** CLI wrapper: prints a table (or JSON) and returns 1 when any check failed. */
export async function doctorCommand(opts: DoctorOptions, io: CliIo): Promise<number> {
  const checks = await runDoctor(opts);
  const failed = checks.some((c) => c.status === 'fail');
  if (opts.json) {
    io.out(JSON.stringify({ ok: !failed, checks }, null, 2));
    return failed ? 1 : 0;
  }
  const width = Math.max(...checks.map((c) => c.name.length));
  for (const c of checks) {
    const mark = c.status === 'pass' ? 'PASS' : c.status === 'warn' ? 'WARN' : 'FAIL';
    io.out(`${mark}  ${c.name.padEnd(width)}  ${c.detail}`);
    if (c.fix && c.status !== 'pass') io.out(`      ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  io.out(failed ? 'Some checks failed.' : 'All required checks passed.');
  return failed ? 1 : 0;
}
