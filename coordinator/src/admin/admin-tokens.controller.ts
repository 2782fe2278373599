import { Body, Controller, Get, HttpCode, Inject, Param, Post, Req } from '@nestjs/common';
import { Actor } from '../audit/actor.decorator';
import type { AuditActor } from '../audit/audit-log';
import { Roles, type AdminRequest } from './admin-auth.guard';
import type { AdminTokenRecord } from './admin-token.repository';
import { AdminTokenService } from './admin-token.service';
import { createAdminTokenSchema, type CreateAdminTokenDto } from './dtos/admin-token.dto';
import { ZodBodyPipe } from './http/zod-body.pipe';

@Controller('admin-tokens')
@Roles('admin')
export class AdminTokensController {
  constructor(@Inject(AdminTokenService) private readonly tokens: AdminTokenService) {}

  @Post()
  create(
    @Body(new ZodBodyPipe(createAdminTokenSchema)) body: CreateAdminTokenDto,
    @Actor() actor: AuditActor,
  ): Promise<AdminTokenRecord & { token: string }> {
    const { name, role, ...expiry } = body;
    return this.tokens.create(name, role, actor, expiry);
  }

  @Get()
  list(): Promise<AdminTokenRecord[]> {
    return this.tokens.list();
  }

  /** The caller's own token (any role): the web console shows its role and expiry. */
  @Get('me')
  @Roles('viewer')
  me(@Req() req: AdminRequest): Promise<AdminTokenRecord> {
    return this.tokens.get(req.admin!.tokenId);
  }

  @Post(':id/revoke')
  @HttpCode(200)
  revoke(@Param('id') id: string, @Actor() actor: AuditActor): Promise<AdminTokenRecord> {
    return this.tokens.revoke(id, actor);
  }
}
