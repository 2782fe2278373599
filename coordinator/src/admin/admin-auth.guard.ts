import { Inject, Injectable, SetMetadata, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { FedsslError } from '@fedssl/shared/errors';
import { RateLimitService } from '../ratelimit/rate-limit.service';
import { ADMIN_ROLES, type AdminRole } from './admin-token.repository';
import { AdminTokenService, type AdminPrincipal } from './admin-token.service';

export const ROLES_KEY = 'fedssl:roles';
export const PUBLIC_KEY = 'fedssl:public';

/**
 * The least role allowed to call a handler (or every handler of a controller). Roles are
 * ordered admin > operator > viewer, so `@Roles('viewer')` admits all three and
 * `@Roles('admin')` only admins. With several roles listed, the weakest one is the bar.
 */
export const Roles = (...roles: AdminRole[]) => SetMetadata(ROLES_KEY, roles);

/** Marks a handler as needing no bearer token (enrollment, public keys, health). */
export const Public = () => SetMetadata(PUBLIC_KEY, true);

const rank = (r: AdminRole): number => ADMIN_ROLES.length - ADMIN_ROLES.indexOf(r);

/** The weakest of the listed roles (the bar a caller must meet). */
function weakest(required: readonly AdminRole[]): AdminRole {
  return required.reduce((a, b) => (rank(b) < rank(a) ? b : a));
}

/** True when a caller with `role` meets the bar set by `required`. */
export function roleAllows(role: AdminRole, required: readonly AdminRole[]): boolean {
  if (required.length === 0) return false;
  return rank(role) >= Math.min(...required.map(rank));
}

/** Express request with the authenticated admin attached. */
export interface AdminRequest {
  headers: Record<string, string | string[] | undefined>;
  socket?: { remoteAddress?: string };
  admin?: AdminPrincipal;
}

/**
 * Bearer-token guard for the admin REST API, installed globally. Deny by default: an HTTP
 * handler must carry `@Public()` or `@Roles(...)`, so a forgotten decorator closes the
 * endpoint instead of opening it. Non-HTTP contexts (the agent gateway) authenticate
 * themselves and are passed through.
 */
@Injectable()
export class AdminAuthGuard implements CanActivate {
  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(AdminTokenService) private readonly tokens: AdminTokenService,
    @Inject(RateLimitService) private readonly limits: RateLimitService,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (context.getType() !== 'http') return true;
    const targets = [context.getHandler(), context.getClass()];
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC_KEY, targets)) return true;
    const required = this.reflector.getAllAndOverride<AdminRole[] | undefined>(ROLES_KEY, targets) ?? [];

    const req = context.switchToHttp().getRequest<AdminRequest>();
    const header = req.headers['authorization'];
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    if (!match?.[1]) {
      throw new FedsslError(
        'ADMIN_UNAUTHORIZED',
        'missing bearer token: send "Authorization: Bearer <admin token>"',
      );
    }
    // Only presented tokens count against the address (guessing needs one); a valid one gives
    // its attempt back, so a busy CLI or console is never limited.
    const address = this.limits.addressOf(req.socket?.remoteAddress, req.headers);
    this.limits.attempt('admin-auth', address);
    const principal = await this.tokens.authenticate(match[1]);
    this.limits.succeeded('admin-auth', address);
    if (!roleAllows(principal.role, required)) {
      throw new FedsslError(
        'ADMIN_FORBIDDEN',
        required.length === 0
          ? 'this endpoint is not open to admin tokens'
          : `role ${principal.role} may not do this; requires ${weakest(required)} or higher`,
      );
    }
    req.admin = principal;
    return true;
  }
}
