import { resolve } from 'node:path';
import { z } from 'zod';
import { FedsslError } from '@fedssl/shared/errors';

/** Validated, immutable coordinator configuration (built once at boot by {@link loadConfig}). */
export interface CoordinatorConfig {
  host: string;
  /** TCP port; 0 = any free port (tests). */
  port: number;
  /** Root of everything the coordinator writes: database, keys, models, uploads. */
  dataDir: string;
  /** null = SQLite file `<dataDir>/fedssl.sqlite`. */
  databaseUrl: string | null;
  logLevel: string;
  /**
   * How long a replaced key (a site's or the coordinator's) is still accepted after a
   * rotation, in seconds (FEDSSL_KEY_GRACE_SECONDS, default 24 h). Absent: the default.
   */
  keyGraceSeconds?: number;
  /**
   * Model retention (FEDSSL_RETAIN_VERSIONS): keep the weights of the last N versions of each run
   * (plus pinned ones); older ones are pruned after each publish. Absent or 0: keep everything.
   */
  retainVersions?: number;
  /**
   * Tolerance for an update's signed `createdAt` against the coordinator's clock, in seconds
   * (FEDSSL_MAX_CLOCK_SKEW_SECONDS, default 600). Absent: the default.
   */
  maxClockSkewSeconds?: number;
  /**
   * Memory for accepted updates kept opened from commit to aggregation, in MiB
   * (FEDSSL_INGEST_CACHE_MB, default 1024; 0 = open every update again at aggregation).
   * Absent: the default.
   */
  ingestCacheMiB?: number;
  /**
   * Per-address limits of the unauthenticated entry points (FEDSSL_RATE_LIMIT_*; see
   * ratelimit/rate-limits.ts for the classes and their defaults). Absent: the defaults.
   */
  rateLimits?: RateLimitsConfig;
  /**
   * Reverse proxies in front of the coordinator whose `X-Forwarded-For` entry is trusted
   * (FEDSSL_TRUST_PROXY_HOPS, default 0: the TCP peer is the client). Absent: 0.
   */
  trustProxyHops?: number;
}

/** `count` attempts per `perSeconds` from one address (a token bucket refilled evenly). */
export interface RateLimit {
  count: number;
  perSeconds: number;
}

/** One limit per endpoint class (null = unlimited) and how many client buckets are kept at most. */
export interface RateLimitsConfig {
  enroll?: RateLimit | null;
  adminAuth?: RateLimit | null;
  agentConnect?: RateLimit | null;
  /** Most addresses remembered over all classes; the least recently seen is forgotten first. */
  maxClients?: number;
}

/**
 * Limits when FEDSSL_RATE_LIMIT_* are unset (and for configs built in code without them). Only
 * failed attempts are kept against an address (a success gives its token back), so honest
 * traffic never meets them; the numbers bound guessing, not use.
 */
export const DEFAULT_RATE_LIMITS = Object.freeze({
  enroll: Object.freeze({ count: 10, perSeconds: 60 }),
  adminAuth: Object.freeze({ count: 30, perSeconds: 60 }),
  agentConnect: Object.freeze({ count: 60, perSeconds: 60 }),
  maxClients: 10_000,
});

/** Default grace period of a replaced key: 24 hours. */
export const DEFAULT_KEY_GRACE_SECONDS = 86_400;

/** Nest injection token for the {@link CoordinatorConfig}. */
export const CONFIG = Symbol('CONFIG');
/** Nest injection token for the root pino `Logger`. */
export const LOGGER = Symbol('LOGGER');

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Wraps a raw value in quotes for error messages without echoing anything huge. */
const shown = (v: unknown): string => JSON.stringify(String(v).slice(0, 100));

/** `<count>/<seconds>` (e.g. `10/60`: ten attempts a minute from one address) or `off`. */
function rateLimitVar(fallback: RateLimit) {
  return z
    .string()
    .default(`${fallback.count}/${fallback.perSeconds}`)
    .refine((s) => s === 'off' || /^[1-9]\d{0,5}\/[1-9]\d{0,5}$/.test(s), {
      error: (i) => `expected <count>/<seconds> such as 10/60, or off; got ${shown(i.input)}`,
    })
    .transform((s): RateLimit | null => {
      if (s === 'off') return null;
      const [count, perSeconds] = s.split('/').map(Number) as [number, number];
      return { count, perSeconds };
    });
}

const envSchema = z.object({
  FEDSSL_HOST: z
    .string()
    .default('127.0.0.1')
    .refine((s) => s.trim().length > 0 && !/\s/.test(s), {
      error: (i) => `expected a host name or address, got ${shown(i.input)}`,
    }),
  FEDSSL_PORT: z
    .string()
    .default('8080')
    .refine((s) => /^\d{1,5}$/.test(s) && Number(s) <= 65535, {
      error: (i) => `expected integer 0–65535, got ${shown(i.input)}`,
    })
    .transform(Number),
  FEDSSL_DATA_DIR: z
    .string()
    .default('./fedssl-data')
    .refine((s) => s.trim().length > 0, { error: () => 'expected a directory path, got ""' }),
  FEDSSL_DATABASE_URL: z
    .string()
    .optional()
    .refine((s) => s === undefined || s === '' || /^(sqlite:|postgres(ql)?:\/\/)/.test(s), {
      error: (i) => `expected sqlite:<file> or postgres://…, got ${shown(i.input)}`,
    }),
  FEDSSL_LOG_LEVEL: z
    .string()
    .default('info')
    .refine((s) => (LOG_LEVELS as readonly string[]).includes(s), {
      error: (i) => `expected one of ${LOG_LEVELS.join('|')}, got ${shown(i.input)}`,
    }),
  FEDSSL_KEY_GRACE_SECONDS: z
    .string()
    .default(String(DEFAULT_KEY_GRACE_SECONDS))
    .refine((s) => /^\d{1,9}$/.test(s), {
      error: (i) => `expected whole seconds 0–999999999, got ${shown(i.input)}`,
    })
    .transform(Number),
  FEDSSL_RETAIN_VERSIONS: z
    .string()
    .default('0')
    .refine((s) => /^\d{1,6}$/.test(s), {
      error: (i) => `expected a whole number of versions to keep per run (0 = all), got ${shown(i.input)}`,
    })
    .transform(Number),
  FEDSSL_MAX_CLOCK_SKEW_SECONDS: z
    .string()
    .default('600')
    .refine((s) => /^\d{1,7}$/.test(s), {
      error: (i) => `expected whole seconds 0–9999999, got ${shown(i.input)}`,
    })
    .transform(Number),
  FEDSSL_INGEST_CACHE_MB: z
    .string()
    .default('1024')
    .refine((s) => /^\d{1,7}$/.test(s), {
      error: (i) => `expected whole MiB 0–9999999 (0 = keep no opened update), got ${shown(i.input)}`,
    })
    .transform(Number),
  FEDSSL_RATE_LIMIT_ENROLL: rateLimitVar(DEFAULT_RATE_LIMITS.enroll),
  FEDSSL_RATE_LIMIT_ADMIN_AUTH: rateLimitVar(DEFAULT_RATE_LIMITS.adminAuth),
  FEDSSL_RATE_LIMIT_AGENT_CONNECT: rateLimitVar(DEFAULT_RATE_LIMITS.agentConnect),
  FEDSSL_RATE_LIMIT_MAX_CLIENTS: z
    .string()
    .default(String(DEFAULT_RATE_LIMITS.maxClients))
    .refine((s) => /^\d{1,7}$/.test(s) && Number(s) >= 1, {
      error: (i) => `expected a whole number of client addresses 1–9999999, got ${shown(i.input)}`,
    })
    .transform(Number),
  FEDSSL_TRUST_PROXY_HOPS: z
    .string()
    .default('0')
    .refine((s) => /^\d{1,2}$/.test(s), {
      error: (i) => `expected the number of reverse proxies in front (0–99), got ${shown(i.input)}`,
    })
    .transform(Number),
});

/**
 * Reads and validates every `FEDSSL_*` variable once. All problems are reported together
 * in one {@link FedsslError} (`RUN_CONFIG_INVALID` is for runs; config uses
 * `COORDINATOR_CONFIG_INVALID`) so an operator fixes them in one go.
 *
 * @example
 * const config = loadConfig(process.env);
 */
export function loadConfig(env: NodeJS.ProcessEnv): CoordinatorConfig {
  const result = envSchema.safeParse(env);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new FedsslError('COORDINATOR_CONFIG_INVALID', `invalid configuration: ${problems.join('; ')}`, {
      problems,
    });
  }
  const e = result.data;
  const dataDir = resolve(e.FEDSSL_DATA_DIR);
  return Object.freeze({
    host: e.FEDSSL_HOST,
    port: e.FEDSSL_PORT,
    dataDir,
    databaseUrl: e.FEDSSL_DATABASE_URL ? e.FEDSSL_DATABASE_URL : null,
    logLevel: e.FEDSSL_LOG_LEVEL,
    keyGraceSeconds: e.FEDSSL_KEY_GRACE_SECONDS,
    retainVersions: e.FEDSSL_RETAIN_VERSIONS,
    maxClockSkewSeconds: e.FEDSSL_MAX_CLOCK_SKEW_SECONDS,
    ingestCacheMiB: e.FEDSSL_INGEST_CACHE_MB,
    rateLimits: Object.freeze({
      enroll: e.FEDSSL_RATE_LIMIT_ENROLL,
      adminAuth: e.FEDSSL_RATE_LIMIT_ADMIN_AUTH,
      agentConnect: e.FEDSSL_RATE_LIMIT_AGENT_CONNECT,
      maxClients: e.FEDSSL_RATE_LIMIT_MAX_CLIENTS,
    }),
    trustProxyHops: e.FEDSSL_TRUST_PROXY_HOPS,
  });
}
