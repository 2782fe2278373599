import { Module } from '@nestjs/common';
import { EnrollmentController } from './enrollment.controller';
import { SitesController } from './sites.controller';

/** REST for enrollment and the site registry (services come from the global CoreModule). */
@Module({ controllers: [EnrollmentController, SitesController] })
export class SitesModule {}
