import { ERROR_CODES, FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import type { Ack, AgentToCoordinatorEvents } from '@fedssl/shared/protocol';

/**
 * The seam between the task runner and the network: what the runner may ask of the
 * coordinator. {@link CoordinatorClient} implements it over socket.io; tests use a strict
 * fake. Keeping the runner off socket.io makes its decisions testable in isolation.
 */

/** Agent → coordinator events that take an ack. */
export type RequestEvent =
  'model:manifest' | 'model:chunk' | 'update:begin' | 'update:chunk' | 'update:commit';
/** Agent → coordinator events without an ack. */
export type NotifyEvent = 'task:progress' | 'task:failed' | 'status';

export type RequestPayload<E extends RequestEvent> = Parameters<AgentToCoordinatorEvents[E]>[0];
export type RequestAck<E extends RequestEvent> = Parameters<Parameters<AgentToCoordinatorEvents[E]>[1]>[0];
/** The success branch of an event's ack, without `ok`. */
export type RequestResult<E extends RequestEvent> = Omit<Extract<RequestAck<E>, { ok: true }>, 'ok'>;
export type NotifyPayload<E extends NotifyEvent> = Parameters<AgentToCoordinatorEvents[E]>[0];

export interface Uplink {
  /**
   * Send a request and wait for its ack. Resolves with the success payload; rejects with a
   * FedsslError carrying the coordinator's code on `{ok:false}`, or COORDINATOR_UNREACHABLE
   * on disconnect/timeout (the caller may retry once {@link ready} resolves again).
   */
  request<E extends RequestEvent>(event: E, payload: RequestPayload<E>): Promise<RequestResult<E>>;
  /** Fire-and-forget notification (buffered by socket.io while disconnected). */
  notify<E extends NotifyEvent>(event: E, payload: NotifyPayload<E>): void;
  /** Resolves once connected and authenticated (at once if already). */
  ready(signal?: AbortSignal): Promise<void>;
}

/**
 * Turn a coordinator's error ack into a FedsslError: its code when we know it, else
 * PROTOCOL_INVALID_MESSAGE with the unknown code in the message and details.
 */
export function ackErrorToFedssl(
  event: string,
  error: { code?: unknown; message?: unknown } | undefined,
): FedsslError {
  const code = typeof error?.code === 'string' ? error.code : 'UNKNOWN';
  const message = typeof error?.message === 'string' ? error.message : 'no message';
  if (Object.prototype.hasOwnProperty.call(ERROR_CODES, code)) {
    return new FedsslError(code as ErrorCode, `coordinator refused ${event}: ${message}`, {
      event,
      remoteCode: code,
    });
  }
  return new FedsslError(
    'PROTOCOL_INVALID_MESSAGE',
    `coordinator refused ${event} with unknown code ${code}: ${message}`,
    { event, remoteCode: code },
  );
}

/** Unwrap an ack: the payload on success, a FedsslError (thrown) otherwise. */
export function unwrapAck<T extends object>(event: string, ack: Ack<T> | unknown): Omit<T, 'ok'> {
  if (typeof ack !== 'object' || ack === null || !('ok' in ack)) {
    throw new FedsslError('PROTOCOL_INVALID_MESSAGE', `malformed ack for ${event}`);
  }
  const a = ack as Ack<T>;
  if (a.ok === true) {
    const { ok: _ok, ...rest } = a as { ok: true } & T;
    return rest as Omit<T, 'ok'>;
  }
  if (a.ok === false) throw ackErrorToFedssl(event, a.error);
  throw new FedsslError('PROTOCOL_INVALID_MESSAGE', `malformed ack for ${event}`);
}

/**
 * A FedsslError recognised by shape, not `instanceof`: under test runners (and with two
 * installed copies of @fedssl/shared) the class may come from another module instance.
 */
export function asCodedError(
  e: unknown,
): { code: string; message: string; details?: Record<string, unknown> } | null {
  if (typeof e !== 'object' || e === null) return null;
  const x = e as { name?: unknown; code?: unknown; message?: unknown; details?: unknown };
  if (x.name !== 'FedsslError' || typeof x.code !== 'string' || typeof x.message !== 'string') return null;
  return {
    code: x.code,
    message: x.message,
    ...(typeof x.details === 'object' && x.details !== null
      ? { details: x.details as Record<string, unknown> }
      : {}),
  };
}
