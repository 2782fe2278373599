import { Controller, Get, Inject, Query } from '@nestjs/common';
import { z } from 'zod';
import { Roles } from '../admin/admin-auth.guard';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import { AuditLog, type AuditEntry, type AuditVerification } from './audit-log';

/** `GET /audit?after=&limit=` query. */
export const auditListQuerySchema = z
  .object({
    after: z
      .string()
      .regex(/^\d{1,12}$/, 'expected a non-negative integer')
      .transform(Number)
      .default(0),
    limit: z
      .string()
      .regex(/^\d{1,4}$/, 'expected an integer 1–1000')
      .transform(Number)
      .refine((n) => n >= 1 && n <= 1000, 'expected an integer 1–1000')
      .default(100),
  })
  .strict();

/** `/api/v1/audit`: the hash-chained audit log, read-only. */
@Controller('audit')
@Roles('viewer')
export class AuditController {
  constructor(@Inject(AuditLog) private readonly audit: AuditLog) {}

  /** Entries with seq > `after`, oldest first; page with `after` = the last seq seen. */
  @Get()
  async list(
    @Query(new ZodBodyPipe(auditListQuerySchema)) q: z.output<typeof auditListQuerySchema>,
  ): Promise<{ entries: AuditEntry[]; nextAfter: number | null }> {
    const entries = await this.audit.list({ after: q.after, limit: q.limit });
    return { entries, nextAfter: entries.length === q.limit ? (entries.at(-1)?.seq ?? null) : null };
  }

  /** Recomputes the whole chain: {ok, entries, firstBadSeq?, reason?}. */
  @Get('verify')
  verify(): Promise<AuditVerification> {
    return this.audit.verify();
  }
}
