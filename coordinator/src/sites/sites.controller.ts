import { Body, Controller, Get, HttpCode, Inject, Param, Post } from '@nestjs/common';
import {
  signedSiteKeyRotationSchema,
  type SignedSiteKeyRotation,
  type SiteKeyRotationResponse,
} from '@fedssl/shared/protocol';
import { Public, Roles } from '../admin/admin-auth.guard';
import { CLOCK, type Clock } from '../config/clock';
import { Actor } from '../audit/actor.decorator';
import type { AuditActor } from '../audit/audit-log';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import {
  revokeSiteSchema,
  toSiteResponse,
  type RevokeSiteDto,
  type SiteKeyResponse,
  type SiteResponse,
} from './dtos/site.dto';
import { PresenceService } from './presence.service';
import { SiteRegistryService } from './site-registry.service';

@Controller('sites')
export class SitesController {
  constructor(
    @Inject(SiteRegistryService) private readonly registry: SiteRegistryService,
    @Inject(PresenceService) private readonly presence: PresenceService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  @Roles('viewer')
  @Get()
  async list(): Promise<SiteResponse[]> {
    const now = this.clock.now();
    return (await this.registry.list()).map((s) => toSiteResponse(s, this.presence.isOnline(s.id), now));
  }

  /** A site's keys, oldest first, each with its status (current, grace, expired). */
  @Roles('viewer')
  @Get(':id/keys')
  async keys(@Param('id') id: string): Promise<SiteKeyResponse[]> {
    return toSiteResponse(await this.registry.require(id), false, this.clock.now()).keys;
  }

  /**
   * The agent replaces its keys (`fedssl-agent rotate-keys`). No bearer token: the request is
   * signed by the site's current key and by the new one.
   */
  @Public()
  @Post(':id/keys/rotate')
  @HttpCode(200)
  rotateKeys(
    @Param('id') id: string,
    @Body(new ZodBodyPipe(signedSiteKeyRotationSchema)) body: SignedSiteKeyRotation,
  ): Promise<SiteKeyRotationResponse> {
    return this.registry.rotateKeys(id, body);
  }

  @Roles('admin')
  @Post(':id/revoke')
  @HttpCode(200)
  async revoke(
    @Param('id') id: string,
    @Body(new ZodBodyPipe(revokeSiteSchema)) body: RevokeSiteDto,
    @Actor() actor: AuditActor,
  ): Promise<SiteResponse> {
    const site = await this.registry.revoke(id, body.reason, actor);
    return toSiteResponse(site, this.presence.isOnline(id), this.clock.now());
  }
}
