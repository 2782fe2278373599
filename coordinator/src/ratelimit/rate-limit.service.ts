import { Inject, Injectable } from '@nestjs/common';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import { CLOCK, type Clock } from '../config/clock';
import {
  CONFIG,
  DEFAULT_RATE_LIMITS,
  LOGGER,
  type CoordinatorConfig,
  type RateLimit,
} from '../config/config';
import { clientAddress } from './client-address';
import { TokenBuckets } from './token-buckets';

/** The unauthenticated entry points, each limited on its own. */
export type RateLimitClass = 'enroll' | 'admin-auth' | 'agent-connect';

/** What the limiter tells the metrics: one event per refused attempt. */
export interface RateLimitEvents {
  limited: [cls: RateLimitClass];
}

/** Every class, in a fixed order (metrics start each at zero). */
export const RATE_LIMIT_CLASSES: readonly RateLimitClass[] = ['enroll', 'admin-auth', 'agent-connect'];

/** What a refused attempt was, in the error message. */
const ATTEMPTS: Record<RateLimitClass, string> = {
  enroll: 'failed enrollment attempts',
  'admin-auth': 'failed admin authentications',
  'agent-connect': 'agent connections that did not authenticate',
};

/**
 * Per-address limits of the entry points an attacker can reach without credentials:
 * `POST /enroll`, admin bearer tokens (REST and the console socket) and agent socket
 * connections. Each attempt takes a token from its client's bucket up front; an attempt that
 * succeeds gives it back ({@link succeeded}), so only failures count. An empty bucket refuses
 * with RATE_LIMITED (HTTP 429 with `Retry-After`) before any credential is looked at.
 */
@Injectable()
export class RateLimitService {
  private readonly classes = new Map<RateLimitClass, { limit: RateLimit; buckets: TokenBuckets }>();
  private readonly log: Logger;
  /** `limited` per refused attempt (ops metrics count them; the log has one line per client). */
  readonly events = new EventEmitter<RateLimitEvents>();
  /** How many reverse proxies' `X-Forwarded-For` entries to trust (see {@link clientAddress}). */
  private readonly trustProxyHops: number;

  constructor(
    @Inject(CONFIG) config: CoordinatorConfig,
    @Inject(CLOCK) clock: Clock,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'RateLimit' });
    this.trustProxyHops = config.trustProxyHops ?? 0;
    const c = config.rateLimits ?? {};
    const limits: [RateLimitClass, RateLimit | null][] = [
      ['enroll', c.enroll === undefined ? DEFAULT_RATE_LIMITS.enroll : c.enroll],
      ['admin-auth', c.adminAuth === undefined ? DEFAULT_RATE_LIMITS.adminAuth : c.adminAuth],
      ['agent-connect', c.agentConnect === undefined ? DEFAULT_RATE_LIMITS.agentConnect : c.agentConnect],
    ];
    // The address budget is shared out between the classes that are on.
    const on = limits.filter((l): l is [RateLimitClass, RateLimit] => l[1] !== null);
    const maxClients = c.maxClients ?? DEFAULT_RATE_LIMITS.maxClients;
    const perClass = Math.max(1, Math.floor(maxClients / Math.max(1, on.length)));
    for (const [cls, limit] of on)
      this.classes.set(cls, { limit, buckets: new TokenBuckets(limit, perClass, () => clock.now()) });
  }

  /** The client address of a request or socket handshake (its TCP peer and `X-Forwarded-For`). */
  addressOf(peer: string | undefined, headers: Record<string, string | string[] | undefined>): string {
    return clientAddress(peer, headers['x-forwarded-for'], this.trustProxyHops);
  }

  /**
   * Counts one attempt of `address` at `cls`.
   * @throws FedsslError RATE_LIMITED (details: `limit`, `retryAfterSeconds`) when its bucket is empty.
   */
  attempt(cls: RateLimitClass, address: string): void {
    const c = this.classes.get(cls);
    if (!c) return;
    const r = c.buckets.take(address);
    if (r.allowed) return;
    this.events.emit('limited', cls);
    // Once per client while it stays limited: an attack must not flood the log too.
    if (r.first)
      this.log.warn({ address, limit: cls, retryAfterSeconds: r.retryAfterSeconds }, 'rate limit reached');
    throw new FedsslError(
      'RATE_LIMITED',
      `too many ${ATTEMPTS[cls]} from this address (limit ${cls}: ${c.limit.count} per ${c.limit.perSeconds} s); retry in ${r.retryAfterSeconds} s`,
      { limit: cls, retryAfterSeconds: r.retryAfterSeconds },
    );
  }

  /** The attempt of `address` at `cls` was legitimate: its token is given back. */
  succeeded(cls: RateLimitClass, address: string): void {
    this.classes.get(cls)?.buckets.refund(address);
  }

  /** Buckets held for `cls` (tests: the memory bound). */
  bucketCount(cls: RateLimitClass): number {
    return this.classes.get(cls)?.buckets.size ?? 0;
  }
}
