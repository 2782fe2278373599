import { Inject, Module, type OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditLog } from '../audit/audit-log';
import { CLOCK, type Clock } from '../config/clock';
import { CONFIG, LOGGER, type CoordinatorConfig } from '../config/config';
import { RoundEngine } from '../runs/round-engine';
import { RunRepository } from '../runs/run.repository';
import { RunsModule } from '../runs/runs.module';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { ModelMarksRepository } from './model-marks.repository';
import { ModelStoreService } from './model-store.service';
import { RetentionController } from './retention.controller';
import { RetentionService } from './retention.service';

/** Model retention: marks table, the policy after each publish, and the admin endpoints. */
@Module({
  imports: [RunsModule],
  controllers: [RetentionController],
  providers: [
    {
      provide: ModelMarksRepository,
      useFactory: (db: SqlStore) => new ModelMarksRepository(db).init(),
      inject: [SQL_STORE],
    },
    {
      provide: RetentionService,
      useFactory: (
        config: CoordinatorConfig,
        models: ModelStoreService,
        marks: ModelMarksRepository,
        runs: RunRepository,
        audit: AuditLog,
        clock: Clock,
        logger: Logger,
        engine: RoundEngine,
      ) =>
        new RetentionService({
          config,
          models,
          marks,
          runs,
          audit,
          clock,
          logger,
          engineEvents: engine.events,
        }),
      inject: [
        CONFIG,
        ModelStoreService,
        ModelMarksRepository,
        RunRepository,
        AuditLog,
        CLOCK,
        LOGGER,
        RoundEngine,
      ],
    },
  ],
  exports: [RetentionService, ModelMarksRepository],
})
export class RetentionModule implements OnModuleDestroy {
  constructor(@Inject(RetentionService) private readonly retention: RetentionService) {}

  onModuleDestroy(): void {
    this.retention.stop();
  }
}
