import { Module, type DynamicModule } from '@nestjs/common';
import type { Logger } from 'pino';
import { AdminModule } from './admin/admin.module';
import { AuditModule } from './audit/audit.module';
import type { CoordinatorConfig } from './config/config';
import { ConsoleModule } from './console/console.module';
import { CoreModule, type CoreOptions } from './core.module';
import { GatewayModule } from './gateway/gateway.module';
import { KeysModule } from './keys/keys.module';
import { ModelsModule } from './models/models.module';
import { RetentionModule } from './models/retention.module';
import { OpsModule } from './ops/ops.module';
import { RunsModule } from './runs/runs.module';
import { SitesModule } from './sites/sites.module';

/** The whole coordinator: platform (core, keys, sites, admin, models) + federation (runs, gateway). */
@Module({})
export class AppModule {
  static forRoot(config: CoordinatorConfig, logger: Logger, options: CoreOptions = {}): DynamicModule {
    return {
      module: AppModule,
      imports: [
        CoreModule.forRoot(config, logger, options),
        KeysModule,
        SitesModule,
        AdminModule,
        AuditModule,
        ModelsModule,
        RunsModule,
        RetentionModule,
        GatewayModule,
        ConsoleModule,
        OpsModule,
      ],
    };
  }
}
