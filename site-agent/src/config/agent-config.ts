import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import {
  BOX_SECRET_KEY_BYTES,
  SIGNING_SECRET_KEY_BYTES,
  boxKeyPairFromSecretKey,
  equalBytes,
  fromBase64,
  generatePartyKeys,
  signingKeyPairFromSecretKey,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  MAX_CHUNK_BYTES,
  coordinatorKeysSchema,
  idSchema,
  type CoordinatorKeys,
} from '@fedssl/shared/protocol';
import { ensureSecureDir, exists, fileMode, writeSecureFile } from './secure-files';

/**
 * The agent home folder: `config.json` (what to read, whom to talk to, the pinned
 * coordinator keys), `keys.json` (the site's secret keys), `pseudonym-secret` (HMAC key
 * that turns patient ids into pseudonyms), `state/` (per-run local model state) and
 * `ledger.jsonl` (record of uploads). Files 0600, folders 0700.
 */

/** Default home when neither `--home` nor FEDSSL_AGENT_HOME is given. */
export const DEFAULT_AGENT_HOME = './fedssl-agent';
/** Default size of one encrypted update chunk. */
export const DEFAULT_UPLOAD_CHUNK_SIZE = 1024 * 1024;
/** Default working image side (2× a 32-pixel training input). */
export const DEFAULT_IMAGE_SIZE = 64;
export const PSEUDONYM_SECRET_BYTES = 32;

export const backendPreferenceSchema = z.enum(['auto', 'wasm', 'cpu', 'tensorflow']);
export type BackendPreference = z.infer<typeof backendPreferenceSchema>;

export const dataConfigSchema = z
  .object({
    /** Folder of PNG/JPEG images (absolute). */
    path: z.string().min(1),
    /** CSV manifest; when absent `manifest.csv` beside the images is used if it exists. */
    manifest: z.string().min(1).optional(),
    /** CSV column holding the (raw) patient id. */
    patientColumn: z.string().min(1).max(128).default('patient_id'),
    /** Side of the square working images, in pixels. */
    imageSize: z.number().int().min(16).max(2048).default(DEFAULT_IMAGE_SIZE),
  })
  .strict();
export type DataConfig = z.infer<typeof dataConfigSchema>;

export const agentConfigSchema = z
  .object({
    configVersion: z.literal(1),
    /** Filled in by `enroll`; null before. */
    siteId: idSchema.nullable(),
    siteName: z.string().max(128).nullable(),
    coordinatorUrl: z.url({ protocol: /^https?$/ }).nullable(),
    /** The coordinator's keys as received at enrollment; trusted from then on. */
    coordinator: coordinatorKeysSchema.nullable(),
    data: dataConfigSchema,
    uploadChunkSize: z.number().int().min(1024).max(MAX_CHUNK_BYTES).default(DEFAULT_UPLOAD_CHUNK_SIZE),
    backend: backendPreferenceSchema.default('auto'),
    /** Data-parallel training worker threads on the wasm/cpu backends; absent: the host's cores, at most 2. */
    trainWorkers: z.number().int().min(1).max(16).optional(),
  })
  .strict();
export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** A config after `enroll`: the coordinator is known and pinned. */
export type EnrolledAgentConfig = AgentConfig & {
  siteId: string;
  siteName: string;
  coordinatorUrl: string;
  coordinator: CoordinatorKeys;
};

const keyPairFileSchema = z.object({ publicKey: z.string(), secretKey: z.string() }).strict();
const keysFileSchema = z.object({ signing: keyPairFileSchema, box: keyPairFileSchema }).strict();

/** Paths of everything in an agent home. */
export interface AgentPaths {
  home: string;
  config: string;
  keys: string;
  pseudonymSecret: string;
  stateDir: string;
  ledger: string;
}

/**
 * Resolve the agent home: explicit option, else FEDSSL_AGENT_HOME, else `./fedssl-agent`.
 * @example resolveAgentHome(opts.home, process.env)
 */
export function resolveAgentHome(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  const chosen =
    explicit ??
    (env.FEDSSL_AGENT_HOME && env.FEDSSL_AGENT_HOME.length > 0 ? env.FEDSSL_AGENT_HOME : DEFAULT_AGENT_HOME);
  return resolve(chosen);
}

/** All file paths inside `home`. */
export function agentPaths(home: string): AgentPaths {
  const h = resolve(home);
  return {
    home: h,
    config: join(h, 'config.json'),
    keys: join(h, 'keys.json'),
    pseudonymSecret: join(h, 'pseudonym-secret'),
    stateDir: join(h, 'state'),
    ledger: join(h, 'ledger.jsonl'),
  };
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 8)
    .map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FedsslError(
        'AGENT_CONFIG_INVALID',
        `${what} not found at ${path}: run \`fedssl-agent init\` first`,
        { file: path },
      );
    }
    throw e;
  }
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FedsslError('AGENT_CONFIG_INVALID', `${path} is not valid JSON: ${(e as Error).message}`, {
      file: path,
    });
  }
}

/**
 * Secret files must not be readable by anyone but the agent's user (as ssh does for
 * private keys): refuse to use them otherwise rather than silently keep going.
 */
async function assertPrivate(path: string): Promise<void> {
  if (process.platform === 'win32') return;
  const mode = await fileMode(path);
  if ((mode & 0o077) !== 0) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `${path} is accessible by other users (mode ${mode.toString(8)}); run \`chmod 600 ${path}\``,
      { file: path, mode },
    );
  }
}

/**
 * Validate a config object; every problem is named by its field path.
 * @throws FedsslError AGENT_CONFIG_INVALID e.g. "config.json: data.imageSize: Too small: expected number to be >=16"
 */
export function parseAgentConfig(value: unknown, source = 'config.json'): AgentConfig {
  const parsed = agentConfigSchema.safeParse(value);
  if (!parsed.success) {
    throw new FedsslError('AGENT_CONFIG_INVALID', `${source}: ${describeIssues(parsed.error)}`, {
      fields: parsed.error.issues.map((i) => i.path.map(String).join('.')),
    });
  }
  const c = parsed.data;
  // Enrollment fills these four together; a partial set means a hand-edited file.
  const enrolled = [c.siteId, c.siteName, c.coordinatorUrl, c.coordinator].filter((v) => v !== null).length;
  if (enrolled !== 0 && enrolled !== 4) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `${source}: siteId, siteName, coordinatorUrl and coordinator must all be set (enrolled) or all be null`,
      {
        fields: ['siteId', 'siteName', 'coordinatorUrl', 'coordinator'],
      },
    );
  }
  return c;
}

/** Read and validate `config.json`. */
export async function loadAgentConfig(home: string): Promise<AgentConfig> {
  const p = agentPaths(home);
  return parseAgentConfig(parseJson(await readText(p.config, 'config.json'), p.config), p.config);
}

/** Write `config.json` (0600) after validating it. */
export async function saveAgentConfig(home: string, config: AgentConfig): Promise<void> {
  const p = agentPaths(home);
  const valid = parseAgentConfig(config, p.config);
  await ensureSecureDir(p.home);
  await writeSecureFile(p.config, JSON.stringify(valid, null, 2) + '\n');
}

/**
 * The config of an enrolled agent.
 * @throws FedsslError AGENT_NOT_ENROLLED when `enroll` has not been run yet.
 */
export function requireEnrolled(config: AgentConfig): EnrolledAgentConfig {
  if (
    config.siteId === null ||
    config.siteName === null ||
    config.coordinatorUrl === null ||
    config.coordinator === null
  ) {
    throw new FedsslError(
      'AGENT_NOT_ENROLLED',
      'this agent is not enrolled yet: run `fedssl-agent enroll --coordinator URL --token T` first',
    );
  }
  return config as EnrolledAgentConfig;
}

/** Serialize party keys for `keys.json` (base64). */
export function encodeKeysFile(keys: PartyKeys): string {
  return (
    JSON.stringify(
      {
        signing: { publicKey: toBase64(keys.signing.publicKey), secretKey: toBase64(keys.signing.secretKey) },
        box: { publicKey: toBase64(keys.box.publicKey), secretKey: toBase64(keys.box.secretKey) },
      },
      null,
      2,
    ) + '\n'
  );
}

/**
 * Parse `keys.json`, checking lengths and that each public key matches its secret key.
 * @throws FedsslError AGENT_CONFIG_INVALID naming the bad field.
 */
export function decodeKeysFile(text: string, source = 'keys.json'): PartyKeys {
  const parsed = keysFileSchema.safeParse(parseJson(text, source));
  if (!parsed.success)
    throw new FedsslError('AGENT_CONFIG_INVALID', `${source}: ${describeIssues(parsed.error)}`);
  const decode = (field: string, b64: string, len: number): Uint8Array => {
    try {
      return fromBase64(b64, len);
    } catch (e) {
      throw new FedsslError('AGENT_CONFIG_INVALID', `${source}: ${field}: ${(e as Error).message}`, {
        fields: [field],
      });
    }
  };
  const signing = signingKeyPairFromSecretKey(
    decode('signing.secretKey', parsed.data.signing.secretKey, SIGNING_SECRET_KEY_BYTES),
  );
  const box = boxKeyPairFromSecretKey(
    decode('box.secretKey', parsed.data.box.secretKey, BOX_SECRET_KEY_BYTES),
  );
  if (!equalBytes(signing.publicKey, decode('signing.publicKey', parsed.data.signing.publicKey, 32))) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `${source}: signing.publicKey does not match signing.secretKey`,
      { fields: ['signing.publicKey'] },
    );
  }
  if (!equalBytes(box.publicKey, decode('box.publicKey', parsed.data.box.publicKey, 32))) {
    throw new FedsslError('AGENT_CONFIG_INVALID', `${source}: box.publicKey does not match box.secretKey`, {
      fields: ['box.publicKey'],
    });
  }
  return { signing, box };
}

/** Read the site's keys (refusing a keys file others can read). */
export async function loadPartyKeys(home: string): Promise<PartyKeys> {
  const p = agentPaths(home);
  const text = await readText(p.keys, 'keys.json');
  await assertPrivate(p.keys);
  return decodeKeysFile(text, p.keys);
}

/** Read the 32-byte pseudonymization secret. */
export async function loadPseudonymSecret(home: string): Promise<Uint8Array> {
  const p = agentPaths(home);
  let bytes: Buffer;
  try {
    bytes = await readFile(p.pseudonymSecret);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FedsslError(
        'AGENT_CONFIG_INVALID',
        `pseudonym-secret not found at ${p.pseudonymSecret}: run \`fedssl-agent init\` first`,
      );
    }
    throw e;
  }
  await assertPrivate(p.pseudonymSecret);
  if (bytes.length !== PSEUDONYM_SECRET_BYTES) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `pseudonym-secret: expected ${PSEUDONYM_SECRET_BYTES} bytes, got ${bytes.length}`,
    );
  }
  return new Uint8Array(bytes);
}

/** Options of {@link initAgentHome}. */
export interface InitAgentHomeOptions {
  home: string;
  data: { path: string; manifest?: string; patientColumn?: string; imageSize?: number };
  /** Replace existing keys and secret (a new identity: the site must enroll again). */
  force?: boolean;
  backend?: BackendPreference;
  uploadChunkSize?: number;
}

/** What {@link initAgentHome} created. */
export interface InitAgentHomeResult {
  paths: AgentPaths;
  config: AgentConfig;
  keys: PartyKeys;
}

/**
 * Create an agent home: fresh keys, a fresh pseudonym secret and an un-enrolled config.
 * Refuses to overwrite existing keys unless `force` (overwriting them loses the site's
 * identity, and replacing the pseudonym secret changes every pseudonym).
 * @throws FedsslError AGENT_CONFIG_INVALID when keys exist and `force` is not set, or options are invalid.
 */
export async function initAgentHome(opts: InitAgentHomeOptions): Promise<InitAgentHomeResult> {
  const paths = agentPaths(opts.home);
  if (!opts.force && ((await exists(paths.keys)) || (await exists(paths.pseudonymSecret)))) {
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `keys already exist in ${paths.home}; pass --force to replace them (the site will have to enroll again)`,
    );
  }
  const config = parseAgentConfig(
    {
      configVersion: 1,
      siteId: null,
      siteName: null,
      coordinatorUrl: null,
      coordinator: null,
      data: {
        path: resolve(opts.data.path),
        ...(opts.data.manifest !== undefined ? { manifest: resolve(opts.data.manifest) } : {}),
        ...(opts.data.patientColumn !== undefined ? { patientColumn: opts.data.patientColumn } : {}),
        ...(opts.data.imageSize !== undefined ? { imageSize: opts.data.imageSize } : {}),
      },
      ...(opts.uploadChunkSize !== undefined ? { uploadChunkSize: opts.uploadChunkSize } : {}),
      ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
    },
    'options',
  );
  await ensureSecureDir(paths.home);
  await ensureSecureDir(paths.stateDir);
  const keys = generatePartyKeys();
  await writeSecureFile(paths.keys, encodeKeysFile(keys));
  await writeSecureFile(paths.pseudonymSecret, randomBytes(PSEUDONYM_SECRET_BYTES));
  await writeSecureFile(paths.config, JSON.stringify(config, null, 2) + '\n');
  return { paths, config, keys };
}
