import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { AdminRequest } from '../admin/admin-auth.guard';
import type { AuditActor } from './audit-log';

/** The audit actor of an admin REST call: `admin:<token id>` (set by the guard), else `system`. */
export const Actor = createParamDecorator((_data: unknown, ctx: ExecutionContext): AuditActor => {
  const req = ctx.switchToHttp().getRequest<AdminRequest>();
  return req.admin ? `admin:${req.admin.tokenId}` : 'system';
});
