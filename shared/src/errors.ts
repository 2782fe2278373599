/**
 * Typed errors with stable codes, shared by every fedssl component.
 *
 * Codes are numbered by component so a code alone tells where to look:
 *   1xxx protocol · 2xxx envelope/crypto · 3xxx codec · 4xxx model
 *   5xxx coordinator: sites/enrollment/auth · 6xxx coordinator: runs/rounds/updates
 *   7xxx site agent: config/data · 8xxx site agent: training/uplink
 * Messages say what was wrong and, where it helps, what to do. They never contain
 * patient identifiers, image data or secret keys.
 */
export class FedsslError extends Error {
  constructor(
    /** Stable symbolic code, e.g. `ENVELOPE_SIGNATURE_INVALID`. */
    readonly code: ErrorCode,
    message: string,
    /** Extra machine-readable context (never secrets or patient data). */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'FedsslError';
  }

  /** The numeric code of {@link code}. */
  get number(): number {
    return ERROR_CODES[this.code];
  }

  toJSON(): { code: ErrorCode; number: number; message: string; details?: Record<string, unknown> } {
    return { code: this.code, number: this.number, message: this.message, details: this.details };
  }
}

export const ERROR_CODES = {
  // 1xxx protocol
  PROTOCOL_VERSION_MISMATCH: 1001,
  PROTOCOL_INVALID_MESSAGE: 1002,
  PROTOCOL_MESSAGE_TOO_LARGE: 1003,
  // 2xxx envelope / crypto
  CRYPTO_INVALID_ARGUMENT: 2001,
  ENVELOPE_SIGNATURE_INVALID: 2002,
  ENVELOPE_KEY_UNSEALABLE: 2003,
  ENVELOPE_CHUNK_INVALID: 2004,
  ENVELOPE_CHUNK_COUNT: 2005,
  ENVELOPE_HASH_MISMATCH: 2006,
  ENVELOPE_HEADER_INVALID: 2007,
  MANIFEST_SIGNATURE_INVALID: 2008,
  // 205x secure aggregation
  SECAGG_OVERFLOW: 2050,
  SECAGG_PROTOCOL: 2051,
  SECAGG_TOO_FEW_PARTIES: 2052,
  SECAGG_RECONSTRUCTION_FAILED: 2053,
  // 3xxx codec
  CODEC_MALFORMED: 3001,
  CODEC_HASH_MISMATCH: 3002,
  CODEC_UNSUPPORTED_DTYPE: 3003,
  // 4xxx model
  MODEL_CONFIG_INVALID: 4001,
  MODEL_WEIGHTS_MISMATCH: 4002,
  // 5xxx coordinator: sites, enrollment, auth
  ENROLLMENT_TOKEN_INVALID: 5001,
  ENROLLMENT_TOKEN_USED: 5002,
  ENROLLMENT_TOKEN_EXPIRED: 5003,
  SITE_NOT_FOUND: 5004,
  SITE_REVOKED: 5005,
  SITE_AUTH_FAILED: 5006,
  SITE_NAME_TAKEN: 5007,
  ADMIN_UNAUTHORIZED: 5008,
  ADMIN_FORBIDDEN: 5009,
  COORDINATOR_CONFIG_INVALID: 5010,
  ADMIN_TOKEN_NOT_FOUND: 5011,
  ENROLLMENT_KEY_IN_USE: 5012,
  SITE_KEY_EXPIRED: 5013,
  SITE_KEY_ROTATION_INVALID: 5014,
  COORDINATOR_KEY_EXPIRED: 5015,
  /** An admin token past its `expiresAt`. */
  ADMIN_TOKEN_EXPIRED: 5016,
  /** No enrollment token was ever issued for this site id. */
  ENROLLMENT_TOKEN_NOT_FOUND: 5017,
  /** The token cannot be expired: it is already used, expired or its site revoked. */
  ENROLLMENT_TOKEN_NOT_PENDING: 5018,
  /** Too many failed attempts from one address at an unauthenticated entry point; retry after the stated delay. */
  RATE_LIMITED: 5019,
  // 505x coordinator: store
  STORE_UNAVAILABLE: 5050,
  /** The coordinator's data directory (or its database) is out of space; retry once it is freed. */
  STORAGE_FULL: 5051,
  // 6xxx coordinator: runs, rounds, updates
  RUN_NOT_FOUND: 6001,
  RUN_INVALID_STATE: 6002,
  RUN_CONFIG_INVALID: 6003,
  TASK_UNKNOWN: 6004,
  TASK_ALREADY_ANSWERED: 6005,
  TASK_EXPIRED: 6006,
  UPDATE_BASE_MODEL_MISMATCH: 6007,
  UPDATE_TENSORS_INVALID: 6008,
  UPDATE_NOT_FINITE: 6009,
  UPDATE_NORM_TOO_LARGE: 6010,
  UPDATE_EXAMPLE_COUNT_INVALID: 6011,
  UPLOAD_UNKNOWN: 6012,
  UPLOAD_OUT_OF_ORDER: 6013,
  MODEL_VERSION_NOT_FOUND: 6014,
  UPDATE_TASK_NONCE_MISMATCH: 6015,
  /** An update's signed createdAt is further from the coordinator's clock than the tolerance allows. */
  UPDATE_CLOCK_SKEW: 6016,
  // 607x coordinator: aggregation strategies
  STRATEGY_STATE_INVALID: 6070,
  // 609x coordinator: model store
  MODEL_CHUNK_OUT_OF_RANGE: 6090,
  MODEL_VERSION_EXISTS: 6091,
  /** The version's weights were deleted by the retention policy; its signed manifest is kept. */
  MODEL_WEIGHTS_NOT_FOUND: 6092,
  // 7xxx site agent: config, data
  AGENT_CONFIG_INVALID: 7001,
  AGENT_NOT_ENROLLED: 7002,
  DATA_SOURCE_INVALID: 7003,
  DATA_EMPTY: 7004,
  COORDINATOR_FINGERPRINT_MISMATCH: 7005,
  // 8xxx site agent: training, uplink
  TASK_SIGNATURE_INVALID: 8001,
  MODEL_SIGNATURE_INVALID: 8002,
  MODEL_HASH_MISMATCH: 8003,
  BACKEND_UNAVAILABLE: 8004,
  TRAINING_FAILED: 8005,
  TRAINING_ABORTED: 8006,
  TASK_NOT_FOR_THIS_SITE: 8007,
  AGENT_BUSY: 8008,
  COORDINATOR_UNREACHABLE: 8009,
  UPLOAD_FAILED: 8010,
  COORDINATOR_KEY_ANNOUNCEMENT_INVALID: 8011,
  // 805x site agent: evaluation (linear probe)
  PROBE_INVALID: 8050,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * True when `e` is a {@link FedsslError}, optionally with the given code. Recognises errors from
 * another copy of this module too (vitest can load shared twice in one process, so `instanceof`
 * alone would miss them).
 */
export function isFedsslError(e: unknown, code?: ErrorCode): e is FedsslError {
  const c = (e as { code?: unknown } | null)?.code;
  const like =
    e instanceof FedsslError ||
    (e instanceof Error &&
      e.name === 'FedsslError' &&
      typeof c === 'string' &&
      Object.hasOwn(ERROR_CODES, c));
  return like && (code === undefined || (e as FedsslError).code === code);
}
