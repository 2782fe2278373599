import {
  Inject,
  Module,
  type OnApplicationBootstrap,
  type OnModuleDestroy,
  Injectable,
} from '@nestjs/common';
import type { Logger } from 'pino';
import { CONFIG, LOGGER, type CoordinatorConfig } from '../config/config';
import { SocketTransportModule } from '../gateway/socket-transport.module';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { ModelStoreService } from '../models/model-store.service';
import { PresenceService } from '../sites/presence.service';
import { SiteRegistryService } from '../sites/site-registry.service';
import { AuditLog } from '../audit/audit-log';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { AGENT_TRANSPORT, type AgentTransport } from '../transport/agent-transport';
import { UpdateStore } from '../uploads/update-store';
import { UploadService } from '../uploads/upload.service';
import { systemClock, type Clock } from './clock';
import { RoundEngine } from './round-engine';
import { RunRepository } from './run.repository';
import { RunService } from './run.service';
import { RunsController } from './runs.controller';

/** Nest token of the round engine's timer clock (override in tests to drive deadlines). */
export const ENGINE_CLOCK = Symbol('ENGINE_CLOCK');

/** Resumes running runs once the app (and the gateway) is up; stops timers on shutdown. */
@Injectable()
export class RunsLifecycle implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(@Inject(RoundEngine) private readonly engine: RoundEngine) {}
  async onApplicationBootstrap(): Promise<void> {
    await this.engine.resumeAll();
  }
  onModuleDestroy(): void {
    this.engine.stop();
  }
}

/**
 * Runs, rounds, aggregation and update ingest. Uses the platform's global CoreModule
 * (DATABASE, CONFIG, LOGGER, keys, sites, presence, model store) and the socket transport.
 */
@Module({
  imports: [SocketTransportModule],
  controllers: [RunsController],
  providers: [
    { provide: ENGINE_CLOCK, useValue: systemClock },
    {
      provide: RunRepository,
      useFactory: (db: SqlStore) => new RunRepository(db).init(),
      inject: [SQL_STORE],
    },
    {
      provide: UpdateStore,
      useFactory: (c: CoordinatorConfig) =>
        new UpdateStore(c.dataDir, {
          ...(c.ingestCacheMiB !== undefined ? { openedBudgetBytes: c.ingestCacheMiB * 1024 * 1024 } : {}),
        }),
      inject: [CONFIG],
    },
    {
      provide: RoundEngine,
      useFactory: (
        repo: RunRepository,
        transport: AgentTransport,
        sites: SiteRegistryService,
        presence: PresenceService,
        models: ModelStoreService,
        keys: CoordinatorKeysService,
        updates: UpdateStore,
        clock: Clock,
        logger: Logger,
        audit: AuditLog,
      ) => new RoundEngine({ repo, transport, sites, presence, models, keys, updates, clock, logger, audit }),
      inject: [
        RunRepository,
        AGENT_TRANSPORT,
        SiteRegistryService,
        PresenceService,
        ModelStoreService,
        CoordinatorKeysService,
        UpdateStore,
        ENGINE_CLOCK,
        LOGGER,
        AuditLog,
      ],
    },
    {
      provide: UploadService,
      useFactory: (
        repo: RunRepository,
        engine: RoundEngine,
        sites: SiteRegistryService,
        keys: CoordinatorKeysService,
        updates: UpdateStore,
        clock: Clock,
        logger: Logger,
        audit: AuditLog,
        config: CoordinatorConfig,
      ) =>
        new UploadService({
          repo,
          engine,
          sites,
          keys,
          updates,
          clock,
          logger,
          audit,
          ...(config.maxClockSkewSeconds !== undefined
            ? { maxClockSkewMs: config.maxClockSkewSeconds * 1000 }
            : {}),
        }),
      inject: [
        RunRepository,
        RoundEngine,
        SiteRegistryService,
        CoordinatorKeysService,
        UpdateStore,
        ENGINE_CLOCK,
        LOGGER,
        AuditLog,
        CONFIG,
      ],
    },
    {
      provide: RunService,
      useFactory: (
        repo: RunRepository,
        engine: RoundEngine,
        sites: SiteRegistryService,
        clock: Clock,
        audit: AuditLog,
      ) => new RunService(repo, engine, sites, clock, audit),
      inject: [RunRepository, RoundEngine, SiteRegistryService, ENGINE_CLOCK, AuditLog],
    },
    RunsLifecycle,
  ],
  exports: [RunRepository, RoundEngine, UploadService, RunService, UpdateStore],
})
export class RunsModule {}
