import { Inject } from '@nestjs/common';
import { WebSocketGateway, WebSocketServer, type OnGatewayInit } from '@nestjs/websockets';
import type { Logger } from 'pino';
import type { Namespace, Socket } from 'socket.io';
import { FedsslError } from '@fedssl/shared/errors';
import { AdminTokenService } from '../admin/admin-token.service';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { LOGGER } from '../config/config';
import { RateLimitService } from '../ratelimit/rate-limit.service';

/** socket.io namespace of the web console (admins' browsers, never agents). */
export const CONSOLE_NAMESPACE = '/console';
/** Room of authenticated console sockets; events go to it only. */
const ROOM = 'admins';

/** What the console is told; each names a resource to re-read over REST. */
export interface ConsoleEvents {
  'site:online': { siteId: string };
  'site:offline': { siteId: string };
  'site:revoked': { siteId: string };
  'run:state': { runId: string; state: string };
  'round:state': { runId: string; round: number; attempt: number; state: string };
}

/**
 * The console's socket.io namespace: an adapter only. A connection must present an admin
 * token (any role) in `handshake.auth.token`; otherwise the handshake fails with the API's
 * message as `connect_error`. It keeps no state and handles no messages: the
 * {@link ConsoleNotifier} pushes domain events through {@link broadcast}.
 */
@WebSocketGateway({ namespace: CONSOLE_NAMESPACE })
export class ConsoleGateway implements OnGatewayInit<Namespace> {
  @WebSocketServer() private server?: Namespace;
  private readonly log: Logger;

  constructor(
    @Inject(AdminTokenService) private readonly tokens: AdminTokenService,
    @Inject(RateLimitService) private readonly limits: RateLimitService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'ConsoleGateway' });
  }

  afterInit(namespace: Namespace): void {
    namespace.use((socket, next) => {
      void this.authenticate(socket).then(
        () => next(),
        (e: unknown) => {
          const message = isFedsslErrorLike(e) ? e.message : 'authentication failed';
          if (!isFedsslErrorLike(e)) this.log.error({ err: e }, 'console authentication failed');
          const data = isFedsslErrorLike(e) ? { code: e.code, ...e.details } : { code: 'INTERNAL' };
          next(Object.assign(new Error(message), { data }));
        },
      );
    });
  }

  private async authenticate(socket: Socket): Promise<void> {
    const token: unknown = (socket.handshake.auth as Record<string, unknown> | undefined)?.['token'];
    if (typeof token !== 'string' || token.length === 0) {
      throw new FedsslError(
        'ADMIN_UNAUTHORIZED',
        'missing admin token: pass it as auth.token in the handshake',
      );
    }
    // The same per-address limit as a bearer token on the REST API (admin-auth).
    const address = this.limits.addressOf(socket.handshake.address, socket.handshake.headers);
    this.limits.attempt('admin-auth', address);
    // `await` also covers a store whose authenticate() returns a promise.
    const principal = await this.tokens.authenticate(token);
    this.limits.succeeded('admin-auth', address);
    await socket.join(ROOM);
    this.log.info({ tokenId: principal.tokenId, role: principal.role }, 'console connected');
  }

  /** Sends one event to every authenticated console. */
  broadcast<E extends keyof ConsoleEvents>(event: E, payload: ConsoleEvents[E]): void {
    this.server?.to(ROOM).emit(event, payload);
  }
}
