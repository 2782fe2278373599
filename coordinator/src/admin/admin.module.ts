import { Module } from '@nestjs/common';
import { AdminTokensController } from './admin-tokens.controller';
import { HealthController } from './health.controller';

/** REST for admin tokens and health (guard, filter and services come from the global CoreModule). */
@Module({ controllers: [AdminTokensController, HealthController] })
export class AdminModule {}
