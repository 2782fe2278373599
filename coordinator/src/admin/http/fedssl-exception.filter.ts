import {
  Catch,
  HttpException,
  HttpStatus,
  Inject,
  type ArgumentsHost,
  type ExceptionFilter,
} from '@nestjs/common';
import { BaseWsExceptionFilter } from '@nestjs/websockets';
import type { Logger } from 'pino';
import { ERROR_CODES, FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import { LOGGER } from '../../config/config';
import { isOutOfSpace } from '../../faults/storage-full';

/**
 * `instanceof FedsslError`, tolerant of a second copy of the errors module (vitest inlines
 * `@fedssl/shared/errors` for test files while shared's own CommonJS code loads it natively,
 * so one process can hold two FedsslError classes).
 */
export function isFedsslErrorLike(e: unknown): e is FedsslError {
  if (e instanceof FedsslError) return true;
  const c = (e as { code?: unknown } | null)?.code;
  return (
    e instanceof Error && e.name === 'FedsslError' && typeof c === 'string' && Object.hasOwn(ERROR_CODES, c)
  );
}

/** HTTP statuses for codes the suffix rules below do not cover. */
const EXPLICIT: Partial<Record<ErrorCode, number>> = {
  ADMIN_UNAUTHORIZED: HttpStatus.UNAUTHORIZED,
  ADMIN_TOKEN_EXPIRED: HttpStatus.UNAUTHORIZED,
  ADMIN_FORBIDDEN: HttpStatus.FORBIDDEN,
  SITE_REVOKED: HttpStatus.FORBIDDEN,
  SITE_AUTH_FAILED: HttpStatus.UNAUTHORIZED,
  ENROLLMENT_TOKEN_USED: HttpStatus.CONFLICT,
  ENROLLMENT_TOKEN_EXPIRED: HttpStatus.GONE,
  ENROLLMENT_TOKEN_NOT_PENDING: HttpStatus.CONFLICT,
  ENROLLMENT_KEY_IN_USE: HttpStatus.CONFLICT,
  SITE_NAME_TAKEN: HttpStatus.CONFLICT,
  RUN_INVALID_STATE: HttpStatus.CONFLICT,
  MODEL_VERSION_EXISTS: HttpStatus.CONFLICT,
  MODEL_CHUNK_OUT_OF_RANGE: HttpStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
  PROTOCOL_VERSION_MISMATCH: HttpStatus.BAD_REQUEST,
  PROTOCOL_MESSAGE_TOO_LARGE: HttpStatus.PAYLOAD_TOO_LARGE,
  CRYPTO_INVALID_ARGUMENT: HttpStatus.BAD_REQUEST,
  TASK_UNKNOWN: HttpStatus.NOT_FOUND,
  UPLOAD_UNKNOWN: HttpStatus.NOT_FOUND,
  STORAGE_FULL: HttpStatus.INSUFFICIENT_STORAGE,
  RATE_LIMITED: HttpStatus.TOO_MANY_REQUESTS,
};

/**
 * HTTP status for a fedssl error code: explicit table first, then `…_NOT_FOUND` → 404,
 * `…_INVALID…`/`…_MISMATCH`/`UPDATE_…` (caller's input) → 400; anything else is ours → 500.
 */
export function httpStatusFor(code: ErrorCode): number {
  const explicit = EXPLICIT[code];
  if (explicit !== undefined) return explicit;
  if (code.endsWith('_NOT_FOUND')) return HttpStatus.NOT_FOUND;
  if (/_INVALID(_|$)|_MISMATCH$/.test(code) || code.startsWith('UPDATE_')) return HttpStatus.BAD_REQUEST;
  return HttpStatus.INTERNAL_SERVER_ERROR;
}

/** Nest's own HTTP exceptions (unknown route, bad JSON…) get a code in the same style. */
function codeForStatus(status: number): string {
  switch (status) {
    case 400:
      return 'PROTOCOL_INVALID_MESSAGE';
    case 404:
      return 'NOT_FOUND';
    case 413:
      return 'PROTOCOL_MESSAGE_TOO_LARGE';
    default:
      return `HTTP_${status}`;
  }
}

interface HttpResponseLike {
  status(code: number): { json(body: unknown): void };
  setHeader(name: string, value: string): void;
  headersSent?: boolean;
}

/** The body every REST error has. */
export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

/**
 * Global filter: every error leaves the REST API as `{ error: { code, message, details? } }`
 * with a status derived from its code. Unexpected errors are logged and answered with a
 * generic 500 so internals (paths, SQL) never reach the client.
 */
@Catch()
export class FedsslExceptionFilter implements ExceptionFilter {
  private readonly log: Logger;
  private readonly wsFallback = new BaseWsExceptionFilter();

  constructor(@Inject(LOGGER) logger: Logger) {
    this.log = logger.child({ context: 'FedsslExceptionFilter' });
  }

  catch(exception: unknown, host: ArgumentsHost): void {
    if (host.getType() === 'ws') {
      // The agent gateway acks its own errors; anything that escapes gets Nest's default
      // ('exception' event) instead of vanishing in an HTTP-only filter.
      this.wsFallback.catch(exception, host);
      return;
    }
    if (host.getType() !== 'http') return;
    const res = host.switchToHttp().getResponse<HttpResponseLike>();
    const [status, body] = this.toResponse(exception);
    // The rate limiter logs a limited client once, not each refused attempt.
    if (status < 500 && body.error.code !== 'RATE_LIMITED') {
      // The caller's mistake or an attack (bad token, wrong role, malformed body): one line
      // with the code; the path without its query, never the body or the Authorization header.
      const req = host.switchToHttp().getRequest<{ method?: string; url?: string }>();
      this.log.warn(
        { code: body.error.code, status, method: req.method, path: req.url?.split('?')[0]?.slice(0, 200) },
        'request refused',
      );
    }
    if (res.headersSent) return;
    const retryAfter = body.error.details?.['retryAfterSeconds'];
    if (status === 429 && typeof retryAfter === 'number') res.setHeader('Retry-After', String(retryAfter));
    res.status(status).json(body);
  }

  private toResponse(e: unknown): [number, ErrorBody] {
    // A write that hit a full disk or database anywhere: say so, not "internal error".
    if (isOutOfSpace(e)) {
      this.log.error({ err: e }, 'data directory full');
      return [
        HttpStatus.INSUFFICIENT_STORAGE,
        {
          error: {
            code: 'STORAGE_FULL',
            message: 'coordinator out of space; free space in FEDSSL_DATA_DIR (or the database volume)',
          },
        },
      ];
    }
    if (isFedsslErrorLike(e)) {
      const status = httpStatusFor(e.code);
      if (status >= 500) this.log.error({ code: e.code, err: e }, 'request failed');
      const error: ErrorBody['error'] = { code: e.code, message: e.message };
      if (e.details !== undefined) error.details = e.details;
      return [status, { error }];
    }
    if (e instanceof HttpException) {
      const status = e.getStatus();
      const r = e.getResponse();
      const message =
        typeof r === 'string'
          ? r
          : typeof (r as { message?: unknown }).message === 'string'
            ? (r as { message: string }).message
            : e.message;
      // Nest raises 400s itself only for unparseable input (body-parser JSON, bad %-encoding).
      return [
        status,
        {
          error: {
            code: codeForStatus(status),
            message: status === 400 ? `malformed request: ${message}` : message,
          },
        },
      ];
    }
    // body-parser errors (malformed JSON, too large) carry a status but are not HttpExceptions.
    const s = (e as { status?: unknown; type?: unknown } | null)?.status;
    if (typeof s === 'number' && s >= 400 && s < 500) {
      const msg = s === 400 ? 'request body is not valid JSON' : (e as Error).message;
      return [s, { error: { code: codeForStatus(s), message: msg } }];
    }
    this.log.error({ err: e }, 'unexpected error');
    return [500, { error: { code: 'INTERNAL', message: 'internal error; see the coordinator log' } }];
  }
}
