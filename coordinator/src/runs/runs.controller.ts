import { Body, Controller, Get, HttpCode, Inject, Param, Post } from '@nestjs/common';
import { Roles } from '../admin/admin-auth.guard';
import { Actor } from '../audit/actor.decorator';
import type { AuditActor } from '../audit/audit-log';
import { RunService } from './run.service';
import type { RunDetail, RunRecord } from './run.types';

/** `/api/v1/runs`: thin handlers; validation and state live in RunService / RoundEngine. */
@Controller('runs')
export class RunsController {
  constructor(@Inject(RunService) private readonly runs: RunService) {}

  @Post()
  @Roles('operator')
  create(@Body() body: unknown, @Actor() actor: AuditActor): Promise<RunRecord> {
    return this.runs.create(body, actor);
  }

  @Post(':id/start')
  @HttpCode(200)
  @Roles('operator')
  start(@Param('id') id: string, @Actor() actor: AuditActor): Promise<RunRecord> {
    return this.runs.start(id, actor);
  }

  @Post(':id/pause')
  @HttpCode(200)
  @Roles('operator')
  pause(@Param('id') id: string, @Actor() actor: AuditActor): Promise<RunRecord> {
    return this.runs.pause(id, actor);
  }

  @Post(':id/resume')
  @HttpCode(200)
  @Roles('operator')
  resume(@Param('id') id: string, @Actor() actor: AuditActor): Promise<RunRecord> {
    return this.runs.resume(id, actor);
  }

  @Post(':id/cancel')
  @HttpCode(200)
  @Roles('operator')
  cancel(@Param('id') id: string, @Actor() actor: AuditActor): Promise<RunRecord> {
    return this.runs.cancel(id, actor);
  }

  @Get()
  @Roles('viewer')
  list(): Promise<RunRecord[]> {
    return this.runs.list();
  }

  @Get(':id')
  @Roles('viewer')
  get(@Param('id') id: string): Promise<RunDetail> {
    return this.runs.get(id);
  }
}
