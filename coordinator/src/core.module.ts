import { Global, Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import { APP_FILTER, APP_GUARD, APP_INTERCEPTOR } from '@nestjs/core';
import type { Logger } from 'pino';
import { AdminAuthGuard } from './admin/admin-auth.guard';
import { AdminTokenRepository } from './admin/admin-token.repository';
import { AdminTokenService } from './admin/admin-token.service';
import { FedsslExceptionFilter } from './admin/http/fedssl-exception.filter';
import { CLOCK, systemClock, type Clock } from './config/clock';
import { AuditLog } from './audit/audit-log';
import { CONFIG, LOGGER, type CoordinatorConfig } from './config/config';
import { CoordinatorKeysService } from './keys/coordinator-keys.service';
import { ModelStoreService } from './models/model-store.service';
import { RateLimitInterceptor } from './ratelimit/rate-limit.interceptor';
import { RateLimitService } from './ratelimit/rate-limit.service';
import { EnrollmentService } from './sites/enrollment.service';
import { PresenceService } from './sites/presence.service';
import { SiteRegistryService } from './sites/site-registry.service';
import { SiteRepository } from './sites/site.repository';
import { openStore } from './store/open-store';
import { SQL_STORE, type SqlStore } from './store/sql-store';

/** Test and embedding seams for {@link CoreModule.forRoot}. */
export interface CoreOptions {
  /** Defaults to the wall clock. */
  clock?: Clock;
  /** An already-open store (e.g. shared with a test); otherwise one is opened from the config and closed on shutdown. */
  store?: SqlStore;
}

const OWNS_DATABASE = Symbol('OWNS_DATABASE');

const SERVICES = [
  CoordinatorKeysService,
  SiteRegistryService,
  PresenceService,
  EnrollmentService,
  ModelStoreService,
  AdminTokenService,
  RateLimitService,
  AdminAuthGuard,
];

/** Repositories migrate their tables before anything uses them. */
const REPOSITORIES = [
  {
    provide: SiteRepository,
    useFactory: (db: SqlStore) => new SiteRepository(db).init(),
    inject: [SQL_STORE],
  },
  {
    provide: AdminTokenRepository,
    useFactory: (db: SqlStore) => new AdminTokenRepository(db).init(),
    inject: [SQL_STORE],
  },
  {
    provide: AuditLog,
    useFactory: (db: SqlStore, clock: Clock) => new AuditLog(db, clock).init(),
    inject: [SQL_STORE, CLOCK],
  },
];

/**
 * The platform every other module builds on: config, logger, clock, database, coordinator
 * keys, site registry and presence, model store, admin auth, rate limits. Global, so feature
 * modules just `@Inject(...)` these. Also installs the admin guard (deny by default), the rate
 * limit interceptor and the error filter for the whole app.
 */
@Global()
@Module({})
export class CoreModule implements OnApplicationShutdown {
  constructor(
    @Inject(SQL_STORE) private readonly db: SqlStore,
    @Inject(OWNS_DATABASE) private readonly ownsDatabase: boolean,
  ) {}

  static forRoot(config: CoordinatorConfig, logger: Logger, options: CoreOptions = {}): DynamicModule {
    const ownsDatabase = options.store === undefined;
    return {
      module: CoreModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        { provide: CLOCK, useValue: options.clock ?? systemClock },
        { provide: SQL_STORE, useFactory: () => options.store ?? openStore(config) },
        { provide: OWNS_DATABASE, useValue: ownsDatabase },
        ...REPOSITORIES,
        ...SERVICES,
        { provide: APP_GUARD, useExisting: AdminAuthGuard },
        { provide: APP_INTERCEPTOR, useClass: RateLimitInterceptor },
        { provide: APP_FILTER, useClass: FedsslExceptionFilter },
      ],
      exports: [
        CONFIG,
        LOGGER,
        CLOCK,
        SQL_STORE,
        SiteRepository,
        AdminTokenRepository,
        AuditLog,
        ...SERVICES,
      ],
    };
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.ownsDatabase) await this.db.close();
  }
}
