import { Body, Controller, HttpCode, Inject, Param, Post } from '@nestjs/common';
import { Roles } from '../admin/admin-auth.guard';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import { Actor } from '../audit/actor.decorator';
import type { AuditActor } from '../audit/audit-log';
import {
  keepModelSchema,
  pruneModelsSchema,
  type KeepModelDto,
  type PruneModelsDto,
} from './dtos/retention.dto';
import type { ModelMark } from './model-marks.repository';
import { RetentionService, type PruneResult } from './retention.service';

/** `/api/v1/models/prune` and `/models/:version/keep`: the retention policy, admins only. */
@Controller('models')
@Roles('admin')
export class RetentionController {
  constructor(@Inject(RetentionService) private readonly retention: RetentionService) {}

  @Post('prune')
  @HttpCode(200)
  prune(
    @Body(new ZodBodyPipe(pruneModelsSchema)) body: PruneModelsDto,
    @Actor() actor: AuditActor,
  ): Promise<PruneResult> {
    return this.retention.prune(body, actor);
  }

  @Post(':version/keep')
  @HttpCode(200)
  keep(
    @Param('version') version: string,
    @Body(new ZodBodyPipe(keepModelSchema)) body: KeepModelDto,
    @Actor() actor: AuditActor,
  ): Promise<ModelMark> {
    return this.retention.setKeep(version, body.keep, actor);
  }
}
