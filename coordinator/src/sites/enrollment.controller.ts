import { Body, Controller, Get, HttpCode, Inject, Param, Post } from '@nestjs/common';
import { enrollRequestSchema, type EnrollRequest, type EnrollResponse } from '@fedssl/shared/protocol';
import { Public, Roles } from '../admin/admin-auth.guard';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import { Actor } from '../audit/actor.decorator';
import { RateLimited } from '../ratelimit/rate-limit.interceptor';
import type { AuditActor } from '../audit/audit-log';
import { createEnrollmentTokenSchema, type CreateEnrollmentTokenDto } from './dtos/site.dto';
import {
  EnrollmentService,
  type EnrollmentTokenSummary,
  type IssuedEnrollmentToken,
} from './enrollment.service';

@Controller()
export class EnrollmentController {
  constructor(@Inject(EnrollmentService) private readonly enrollment: EnrollmentService) {}

  /** Agents redeem their one-time token here (no bearer token: the enrollment token is the credential). */
  @Public()
  @RateLimited('enroll')
  @Post('enroll')
  @HttpCode(200)
  enroll(@Body(new ZodBodyPipe(enrollRequestSchema)) body: EnrollRequest): Promise<EnrollResponse> {
    return this.enrollment.enroll(body);
  }

  @Roles('admin')
  @Post('enrollment-tokens')
  issue(
    @Body(new ZodBodyPipe(createEnrollmentTokenSchema)) body: CreateEnrollmentTokenDto,
    @Actor() actor: AuditActor,
  ): Promise<IssuedEnrollmentToken> {
    return this.enrollment.issueToken(body.siteName, body.expiresInSeconds, actor);
  }

  /** Issued tokens, newest first, with their state; never the secret nor its hash. */
  @Roles('viewer')
  @Get('enrollment-tokens')
  listTokens(): Promise<EnrollmentTokenSummary[]> {
    return this.enrollment.listTokens();
  }

  /** Expires a site's pending token now (same role as issuing one). */
  @Roles('admin')
  @Post('enrollment-tokens/:siteId/expire')
  @HttpCode(200)
  expireToken(@Param('siteId') siteId: string, @Actor() actor: AuditActor): Promise<EnrollmentTokenSummary> {
    return this.enrollment.expireToken(siteId, actor);
  }
}
