import {
  Inject,
  Injectable,
  SetMetadata,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { defer, tap, type Observable } from 'rxjs';
import { RateLimitService, type RateLimitClass } from './rate-limit.service';

const RATE_LIMIT_KEY = 'fedssl:rate-limit';

/** Limits a public handler per client address: failures count, a success gives its token back. */
export const RateLimited = (cls: RateLimitClass) => SetMetadata(RATE_LIMIT_KEY, cls);

/** The parts of an Express request the limit reads. */
interface RequestLike {
  socket?: { remoteAddress?: string };
  headers: Record<string, string | string[] | undefined>;
}

/**
 * Installed globally; acts on handlers marked {@link RateLimited}. An interceptor rather than a
 * guard because it must see the outcome (to give a success its token back); it still runs
 * before the body is validated, so malformed attempts count too.
 */
@Injectable()
export class RateLimitInterceptor implements NestInterceptor {
  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(RateLimitService) private readonly limits: RateLimitService,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const cls = this.reflector.get<RateLimitClass | undefined>(RATE_LIMIT_KEY, context.getHandler());
    if (cls === undefined || context.getType() !== 'http') return next.handle();
    const req = context.switchToHttp().getRequest<RequestLike>();
    const address = this.limits.addressOf(req.socket?.remoteAddress, req.headers);
    return defer(() => {
      this.limits.attempt(cls, address);
      return next.handle().pipe(tap(() => this.limits.succeeded(cls, address)));
    });
  }
}
