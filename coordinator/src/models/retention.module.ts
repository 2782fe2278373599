import { Inject, Module, type OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditLog } from '../audit/audit-log';
import { CLOCK, type Clock } from '../config/clock';
import { CONFIG, LOGGER, type CoordinatorConfig } from '../config/config';
import { RoundEngine } from '../runs/round-engine';
import { RunRepository } from '../runs/run.repository';
import { RunsModule } from '../runs/runs.module';
import { ModelMarksRepository } from './model-marks.repository';
import { ModelStoreService } from './model-store.service';
import { ModelsModule } from './models.module';
import { RetentionController } from './retention.controller';
import { RetentionService } from './retention.service';

/** Model retention: the policy after each publish and the admin endpoints (marks: {@link ModelsModule}). */
@Module({
  imports: [RunsModule, ModelsModule],
  controllers: [RetentionController],
  providers: [
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
  exports: [RetentionService],
})
export class RetentionModule implements OnModuleDestroy {
  constructor(@Inject(RetentionService) private readonly retention: RetentionService) {}

  onModuleDestroy(): void {
    this.retention.stop();
  }
}
