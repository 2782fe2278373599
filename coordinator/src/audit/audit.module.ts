import { Module } from '@nestjs/common';
import { AuditController } from './audit.controller';

/** REST for the audit log (the AuditLog itself is provided by the global CoreModule). */
@Module({ controllers: [AuditController] })
export class AuditModule {}
