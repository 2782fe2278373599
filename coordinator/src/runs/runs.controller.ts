import { Body, Controller, Get, HttpCode, Inject, Param, Post } from '@nestjs/common';
import { Roles } from '../admin/admin-auth.guard';
import { RunService } from './run.service';
import type { RunDetail, RunRecord } from './run.types';

/** `/api/v1/runs`: thin handlers; validation and state live in RunService / RoundEngine. */
@Controller('runs')
export class RunsController {
  constructor(@Inject(RunService) private readonly runs: RunService) {}

  @Post()
  @Roles('operator')
  create(@Body() body: unknown): RunRecord {
    return this.runs.create(body);
  }

  @Post(':id/start')
  @HttpCode(200)
  @Roles('operator')
  start(@Param('id') id: string): RunRecord {
    return this.runs.start(id);
  }

  @Get()
  @Roles('viewer')
  list(): RunRecord[] {
    return this.runs.list();
  }

  @Get(':id')
  @Roles('viewer')
  get(@Param('id') id: string): RunDetail {
    return this.runs.get(id);
  }
}
