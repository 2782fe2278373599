import { Body, Controller, Get, HttpCode, Inject, Param, Post } from '@nestjs/common';
import { Roles } from '../admin/admin-auth.guard';
import { Actor } from '../audit/actor.decorator';
import type { AuditActor } from '../audit/audit-log';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import { revokeSiteSchema, toSiteResponse, type RevokeSiteDto, type SiteResponse } from './dtos/site.dto';
import { PresenceService } from './presence.service';
import { SiteRegistryService } from './site-registry.service';

@Controller('sites')
export class SitesController {
  constructor(
    @Inject(SiteRegistryService) private readonly registry: SiteRegistryService,
    @Inject(PresenceService) private readonly presence: PresenceService,
  ) {}

  @Roles('viewer')
  @Get()
  async list(): Promise<SiteResponse[]> {
    return (await this.registry.list()).map((s) => toSiteResponse(s, this.presence.isOnline(s.id)));
  }

  @Roles('admin')
  @Post(':id/revoke')
  @HttpCode(200)
  async revoke(
    @Param('id') id: string,
    @Body(new ZodBodyPipe(revokeSiteSchema)) body: RevokeSiteDto,
    @Actor() actor: AuditActor,
  ): Promise<SiteResponse> {
    return toSiteResponse(await this.registry.revoke(id, body.reason, actor), this.presence.isOnline(id));
  }
}
