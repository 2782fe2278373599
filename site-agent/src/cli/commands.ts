import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { describeCoordinatorKeys, fingerprint, fromBase64, keyId, toBase64 } from '@fedssl/shared/crypto';
import { ERROR_CODES, FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import {
  PROTOCOL_VERSION,
  type CoordinatorKeys,
  type AgentStatus,
  type EnrollRequest,
} from '@fedssl/shared/protocol';
import { readLedger } from '../audit/ledger';
import { CoordinatorPin } from '../config/coordinator-pin';
import {
  agentPaths,
  initAgentHome,
  loadAgentConfig,
  loadPartyKeys,
  loadPseudonymSecret,
  requireEnrolled,
  saveAgentConfig,
  type BackendPreference,
} from '../config/agent-config';
import { loadTrainingDataset } from '../data/load-dataset';
import { retry } from '../uplink/backoff';
import { CoordinatorClient } from '../uplink/coordinator-client';
import { fileLocalStateStore } from '../uplink/local-state-store';
import { fileOutbox } from '../uplink/outbox';
import { TaskRunner, type TaskOutcome } from '../uplink/task-runner';
import { asCodedError } from '../uplink/uplink';
import { coordinatorUnreachable } from './fetch-failure';
import { formatLedgerTable } from './ledger-table';
import { answerIssues, coordinatorKeysAnswer, enrollAnswer } from './rest-answers';

/**
 * The agent's commands as plain functions (the commander front end in agent-cli.ts only
 * parses arguments). Human-readable output goes through `io.out`; operational logs are
 * pino JSON on stdout.
 */

/** Where command output goes (stdout/stderr in the CLI, arrays in tests). */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
}

/** The agent's version, from its package.json (works from src/ and dist/). */
export function agentVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** pino JSON logger on stdout, level from FEDSSL_LOG_LEVEL (default info). */
export function createLogger(env: NodeJS.ProcessEnv = process.env): Logger {
  return pino({ level: env.FEDSSL_LOG_LEVEL ?? 'info', base: { app: 'fedssl-agent' } });
}

// ------------------------------------------------------------------ init

export interface InitCommandOptions {
  home: string;
  data: string;
  manifest?: string;
  patientColumn?: string;
  imageSize?: number;
  backend?: BackendPreference;
  force?: boolean;
}

/** `fedssl-agent init`: keys, pseudonym secret and config; prints the site key fingerprint. */
export async function initCommand(opts: InitCommandOptions, io: CliIo): Promise<number> {
  const res = await initAgentHome({
    home: opts.home,
    data: {
      path: opts.data,
      ...(opts.manifest !== undefined ? { manifest: opts.manifest } : {}),
      ...(opts.patientColumn !== undefined ? { patientColumn: opts.patientColumn } : {}),
      ...(opts.imageSize !== undefined ? { imageSize: opts.imageSize } : {}),
    },
    ...(opts.force !== undefined ? { force: opts.force } : {}),
    ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
  });
  io.out(`Agent home:            ${res.paths.home}`);
  io.out(`Site key id:           ${keyId(res.keys.signing.publicKey)}`);
  io.out(`Site key fingerprint:  ${fingerprint(res.keys.signing.publicKey, res.keys.box.publicKey)}`);
  io.out('Next: fedssl-agent enroll --home <dir> --coordinator <url> --token <token>');
  return 0;
}

// ------------------------------------------------------------------ enroll

export interface EnrollCommandOptions {
  home: string;
  coordinator: string;
  token: string;
  /** Replace an existing enrollment. */
  force?: boolean;
  /** Refuse to pin a coordinator whose fingerprint is not this one (read out of band). */
  expectFingerprint?: string;
  fetchImpl?: typeof fetch;
}

/** Fingerprints compare without regard to case and spacing ("A1B2C3D4…" = "a1b2 c3d4 …"). */
export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[\s:]/g, '').toLowerCase();
}

/** A refused HTTP request as a coded error: the coordinator's code when it is one we know. */
export async function errorFromResponse(
  res: Response,
  what = 'enrollment',
  fallbackCode: ErrorCode = 'ENROLLMENT_TOKEN_INVALID',
): Promise<FedsslError> {
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const b = (body ?? {}) as {
    code?: unknown;
    message?: unknown;
    error?: { code?: unknown; message?: unknown };
  };
  const code =
    typeof b.code === 'string' ? b.code : typeof b.error?.code === 'string' ? b.error.code : undefined;
  const rawMessage =
    typeof b.message === 'string'
      ? b.message
      : typeof b.error?.message === 'string'
        ? b.error.message
        : res.statusText;
  if (code && Object.prototype.hasOwnProperty.call(ERROR_CODES, code)) {
    return new FedsslError(code as ErrorCode, `${what} refused: ${rawMessage}`, { status: res.status });
  }
  return new FedsslError(
    fallbackCode,
    `${what} refused (HTTP ${res.status}${code ? ` ${code}` : ''}): ${rawMessage}`,
    { status: res.status },
  );
}

/**
 * The coordinator's public keys (`GET /api/v1/coordinator/keys`), with the fingerprint and
 * key id recomputed from the keys rather than trusted.
 * @throws FedsslError COORDINATOR_UNREACHABLE, PROTOCOL_INVALID_MESSAGE
 */
async function fetchCoordinatorKeys(base: string, doFetch: typeof fetch): Promise<CoordinatorKeys> {
  let res: Response;
  try {
    res = await doFetch(`${base}/api/v1/coordinator/keys`);
  } catch (e) {
    throw coordinatorUnreachable(base, e);
  }
  const parsed = res.ok ? coordinatorKeysAnswer.safeParse(await res.json()) : undefined;
  if (!parsed?.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `${base} did not answer with coordinator keys (HTTP ${res.status})`,
    );
  }
  const k = parsed.data;
  return describeCoordinatorKeys(fromBase64(k.signingPublicKey, 32), fromBase64(k.boxPublicKey, 32));
}

/**
 * `fedssl-agent enroll`: register the site's public keys with a one-time token and pin the
 * coordinator's keys. Prints the coordinator fingerprint to compare out of band.
 */
export async function enrollCommand(opts: EnrollCommandOptions, io: CliIo): Promise<number> {
  const config = await loadAgentConfig(opts.home);
  if (config.siteId !== null && !opts.force) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `this agent is already enrolled as ${config.siteId}; pass --force to enroll again`,
    );
  }
  const keys = await loadPartyKeys(opts.home);
  const base = opts.coordinator.replace(/\/+$/, '');
  const body: EnrollRequest = {
    token: opts.token,
    signingPublicKey: toBase64(keys.signing.publicKey),
    boxPublicKey: toBase64(keys.box.publicKey),
    agentVersion: agentVersion(),
    protocolVersion: PROTOCOL_VERSION,
  };
  const doFetch = opts.fetchImpl ?? fetch;
  const mismatch = (fp: string, when: string) =>
    new FedsslError(
      'COORDINATOR_FINGERPRINT_MISMATCH',
      `the coordinator's fingerprint is ${fp}, not the expected ${opts.expectFingerprint}; ${when}. ` +
        'Check the URL and ask the consortium admin',
      { fingerprint: fp },
    );
  if (opts.expectFingerprint !== undefined) {
    // Checked before the token is spent and before our keys are registered anywhere.
    const presented = await fetchCoordinatorKeys(base, doFetch);
    if (normalizeFingerprint(presented.fingerprint) !== normalizeFingerprint(opts.expectFingerprint)) {
      throw mismatch(presented.fingerprint, 'nothing was sent and the token is still valid');
    }
  }
  const res = await retry(
    async () => {
      try {
        return await doFetch(`${base}/api/v1/enroll`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      } catch (e) {
        throw coordinatorUnreachable(base, e);
      }
    },
    { attempts: 3, isRetryable: (e) => asCodedError(e)?.code === 'COORDINATOR_UNREACHABLE' },
  );
  if (!res.ok) throw await errorFromResponse(res);
  const parsed = enrollAnswer.safeParse(await res.json());
  if (!parsed.success)
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `coordinator sent a malformed enrollment response (${answerIssues(parsed.error)}); nothing was pinned`,
    );
  const coord = parsed.data.coordinator;
  // Recompute rather than trust: the fingerprint the admin reads out must be of the keys we pin.
  const sigPk = fromBase64(coord.signingPublicKey, 32);
  const boxPk = fromBase64(coord.boxPublicKey, 32);
  const fp = fingerprint(sigPk, boxPk);
  if (fp !== coord.fingerprint || keyId(sigPk) !== coord.keyId) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      'the coordinator fingerprint or key id does not match its keys; not pinning',
    );
  }
  if (
    opts.expectFingerprint !== undefined &&
    normalizeFingerprint(opts.expectFingerprint) !== normalizeFingerprint(fp)
  ) {
    // Keys changed between the check and the enrollment: nothing is pinned, IT must find out why.
    throw mismatch(fp, 'nothing was pinned, but the token is used up');
  }
  await saveAgentConfig(opts.home, {
    ...config,
    siteId: parsed.data.siteId,
    siteName: parsed.data.siteName,
    coordinatorUrl: base,
    coordinator: coord,
  });
  io.out(`Enrolled as site:         ${parsed.data.siteId} (${parsed.data.siteName})`);
  io.out(`Coordinator key id:       ${coord.keyId}`);
  io.out(`Coordinator fingerprint:  ${fp}`);
  io.out(
    opts.expectFingerprint !== undefined
      ? 'The fingerprint matches the one you expected.'
      : 'Compare this fingerprint with the one your consortium admin reads to you.',
  );
  return 0;
}

// ------------------------------------------------------------------ run

export interface RunCommandOptions {
  home: string;
  backend?: BackendPreference;
  /** Exit after this many tasks have ended (any outcome); for tests and batch jobs. */
  exitAfterTasks?: number;
  /** Training worker threads (wasm/cpu backends); overrides the config's `trainWorkers`. */
  trainWorkers?: number;
  logger: Logger;
  /** Resolves when the process is asked to stop (SIGINT/SIGTERM in the CLI). */
  stopSignal?: Promise<string>;
}

/**
 * `fedssl-agent run`: load the data, connect, take tasks until stopped (or after
 * `exitAfterTasks`). Resolves with the exit code.
 */
export async function runCommand(opts: RunCommandOptions): Promise<number> {
  const log = opts.logger;
  const config = requireEnrolled(await loadAgentConfig(opts.home));
  const keys = await loadPartyKeys(opts.home);
  const secret = await loadPseudonymSecret(opts.home);
  // Loaded here, not at the top: only `run` needs TensorFlow, and it is heavy to load.
  // (A dynamic import is an ES import under Node16 resolution, hence the .js extension.)
  const { selectBackend } = await import('../train/backend.js');
  const { decodeLocalState, encodeLocalState, trainRound } = await import('../train/trainer.js');
  const backend = await selectBackend(log, opts.backend ?? config.backend);
  const { agentTrainingWorkers } = await import('../train/parallel/pool.js');
  const chosen = opts.trainWorkers ?? config.trainWorkers;
  const workers = chosen ?? agentTrainingWorkers();
  if (!backend.native)
    log.info(
      { trainWorkers: workers, configured: chosen !== undefined },
      `training on ${workers} worker thread(s)${chosen === undefined ? ' (default: the cores, at most 2; set trainWorkers in config.json or --train-workers to change)' : ''}`,
    );
  const { dataset, report } = await loadTrainingDataset({
    path: config.data.path,
    ...(config.data.manifest !== undefined ? { manifest: config.data.manifest } : {}),
    patientColumn: config.data.patientColumn,
    imageSize: config.data.imageSize,
    secret,
    logger: log,
  });
  secret.fill(0);
  const version = agentVersion();
  // Followed coordinator key rotations update this pin (and config.json) in place.
  const pin = new CoordinatorPin(opts.home, config.coordinator, log);
  const client = new CoordinatorClient({
    url: config.coordinatorUrl,
    siteId: config.siteId,
    signingSecretKey: keys.signing.secretKey,
    agentVersion: version,
    logger: log,
  });
  let state: AgentStatus['state'] = 'idle';
  const pushStatus = () =>
    client.setStatus({ state, backend: backend.name, exampleCount: report.images, agentVersion: version });
  pushStatus();

  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  let ended = 0;
  const runner = new TaskRunner({
    uplink: client,
    siteId: config.siteId,
    coordinator: pin.bytes,
    siteSigningSecretKey: keys.signing.secretKey,
    uploadChunkSize: config.uploadChunkSize,
    home: opts.home,
    dataset: async () => dataset,
    train: (a) => trainRound({ ...a, workers }),
    localStates: fileLocalStateStore(
      agentPaths(opts.home).stateDir,
      { encode: encodeLocalState, decode: decodeLocalState },
      log,
    ),
    outbox: fileOutbox(join(agentPaths(opts.home).stateDir, 'outbox'), log),
    logger: log,
    onState: (s) => {
      state = s;
      pushStatus();
    },
    onOutcome: (o: TaskOutcome) => {
      ended++;
      log.info(
        { taskId: o.taskId, runId: o.runId, round: o.round, status: o.status, code: o.error?.code },
        'task ended',
      );
      if (opts.exitAfterTasks !== undefined && ended >= opts.exitAfterTasks) finish(0);
    },
  });
  // Registered before task:offer: the coordinator sends the key chain first after auth.
  client.socket.on('keys:announce', (msg) => pin.accept(msg));
  client.socket.on('task:offer', (msg, ack) => runner.handleOffer(msg, ack));
  client.socket.on('task:cancel', (msg) => runner.handleCancel(msg));
  client.socket.on('secagg:step', (msg, ack) => runner.handleSecAggStep(msg, ack));
  client.on('fatal', () => finish(1));
  void opts.stopSignal?.then((sig) => {
    log.info({ signal: sig }, 'stopping');
    finish(0);
  });
  client.connect();
  const code = await finished;
  // Abort whatever step is running, then close the socket: nothing half-sent is left behind.
  await runner.stop();
  client.close();
  await pin.flushed();
  if (client.fatal) throw client.fatal;
  return code;
}

// ------------------------------------------------------------------ ledger

/** `fedssl-agent ledger`: print the upload/download record. */
export async function ledgerCommand(opts: { home: string; json?: boolean }, io: CliIo): Promise<number> {
  const entries = await readLedger(opts.home);
  if (opts.json) {
    io.out(JSON.stringify(entries, null, 2));
    return 0;
  }
  if (entries.length === 0) {
    io.out('No uploads or downloads recorded yet.');
    return 0;
  }
  for (const line of formatLedgerTable(entries)) io.out(line);
  return 0;
}

// ------------------------------------------------------------------ check-data
// In check-data.ts (owned by the data work); re-exported for existing importers.
export { checkDataCommand, formatReport } from './check-data';
