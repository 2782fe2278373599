import { Inject, Module, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ERROR_CODES, FedsslError, type ErrorCode } from '@fedssl/shared/errors';
import { roleAllows } from '../admin/admin-auth.guard';
import { AdminTokenService } from '../admin/admin-token.service';
import { httpStatusFor, isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { CONFIG, type CoordinatorConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { RateLimitService } from '../ratelimit/rate-limit.service';
import { RoundEngine } from '../runs/round-engine';
import { RunsModule } from '../runs/runs.module';
import { PresenceService } from '../sites/presence.service';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { UploadService } from '../uploads/upload.service';
import { OpsMetrics } from './ops-metrics';
import { checkReadiness } from './readiness';

/** Root-level (outside `/api/v1`) operations paths. */
export const OPS_PATHS = { health: '/healthz', ready: '/readyz', metrics: '/metrics' } as const;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
interface RoutableApp {
  get(path: string, handler: Handler): unknown;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('cache-control', 'no-store');
  res.end(JSON.stringify(body));
}

/**
 * Health, readiness and Prometheus metrics at the root of the HTTP port, where probes and
 * scrapers expect them. They are plain routes on the HTTP adapter (like the console) because
 * the REST prefix cannot exclude `healthz` without moving `/api/v1/healthz` too. `/healthz`
 * and `/readyz` are public; `/metrics` needs a bearer token of role viewer or higher,
 * checked by the same token service and role rule as the REST guard.
 */
@Module({ imports: [RunsModule] })
export class OpsModule implements OnModuleInit, OnModuleDestroy {
  readonly metrics: OpsMetrics;

  constructor(
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
    @Inject(CONFIG) private readonly config: CoordinatorConfig,
    @Inject(SQL_STORE) private readonly store: SqlStore,
    @Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService,
    @Inject(AdminTokenService) private readonly tokens: AdminTokenService,
    @Inject(RateLimitService) private readonly limits: RateLimitService,
    @Inject(PresenceService) presence: PresenceService,
    @Inject(RoundEngine) engine: RoundEngine,
    @Inject(UploadService) uploads: UploadService,
  ) {
    this.metrics = new OpsMetrics({
      onlineSites: () => presence.onlineSiteIds().length,
      engineEvents: engine.events,
      uploadEvents: uploads.events,
      rateLimitEvents: limits.events,
    });
  }

  onModuleInit(): void {
    // Routes are registered by now but the not-found handler is not, so these run before it.
    const app = this.adapterHost.httpAdapter?.getInstance<RoutableApp>();
    if (!app) return;
    app.get(OPS_PATHS.health, (_req, res) => sendJson(res, 200, { status: 'ok' }));
    app.get(OPS_PATHS.ready, (_req, res) => {
      void checkReadiness({
        store: this.store,
        dataDir: this.config.dataDir,
        keysLoaded: () =>
          this.keys.keys.signing.secretKey.length === 64 && this.keys.keys.box.secretKey.length === 32,
      }).then((r) => sendJson(res, r.status === 'ready' ? 200 : 503, r));
    });
    app.get(OPS_PATHS.metrics, (req, res) => {
      void this.authorize(req)
        .then(() => this.metrics.scrape())
        .then(({ contentType, body }) => {
          res.statusCode = 200;
          res.setHeader('content-type', contentType);
          res.setHeader('cache-control', 'no-store');
          res.end(body);
        })
        .catch((e: unknown) => {
          const known = isFedsslErrorLike(e) && Object.hasOwn(ERROR_CODES, e.code);
          const code: ErrorCode | 'INTERNAL' = known ? e.code : 'INTERNAL';
          const status = code === 'INTERNAL' ? 500 : httpStatusFor(code);
          const retryAfter = known ? e.details?.['retryAfterSeconds'] : undefined;
          if (typeof retryAfter === 'number') res.setHeader('retry-after', String(retryAfter));
          sendJson(res, status, {
            error: {
              code,
              message: known ? e.message : 'internal error; see the coordinator log',
              ...(known && e.details ? { details: e.details } : {}),
            },
          });
        });
    });
  }

  onModuleDestroy(): void {
    this.metrics.close();
  }

  /** Same bearer rule as the REST guard, bar = viewer. */
  private async authorize(req: IncomingMessage): Promise<void> {
    const header = req.headers['authorization'];
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    if (!match?.[1]) {
      throw new FedsslError(
        'ADMIN_UNAUTHORIZED',
        'missing bearer token: send "Authorization: Bearer <admin token>"',
      );
    }
    // The REST guard's admin-auth limit: a scrape endpoint is a token oracle too.
    const address = this.limits.addressOf(req.socket.remoteAddress, req.headers);
    this.limits.attempt('admin-auth', address);
    const principal = await this.tokens.authenticate(match[1]);
    this.limits.succeeded('admin-auth', address);
    if (!roleAllows(principal.role, ['viewer'])) {
      throw new FedsslError(
        'ADMIN_FORBIDDEN',
        `role ${principal.role} may not do this; requires viewer or higher`,
      );
    }
  }
}
