import { Inject, Module, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { RunsModule } from '../runs/runs.module';
import { ConsoleGateway } from './console.gateway';
import { ConsoleNotifier } from './console.notifier';
import { CONSOLE_PATH, consoleMiddleware } from './console-static';

interface UsableApp {
  use(path: string, handler: ReturnType<typeof consoleMiddleware>): unknown;
}

/**
 * The admin web console: static files at `/console` (outside the `/api/v1` prefix, with a
 * CSP) and the `/console` socket.io namespace that pushes domain events to signed-in
 * browsers. The browser code only calls the public REST API.
 */
@Module({
  imports: [RunsModule],
  providers: [ConsoleGateway, ConsoleNotifier],
})
export class ConsoleModule implements OnModuleInit {
  constructor(@Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost) {}

  onModuleInit(): void {
    // Routes are registered by now but the not-found handler is not, so this runs before it.
    const app = this.adapterHost.httpAdapter?.getInstance<UsableApp>();
    app?.use(CONSOLE_PATH, consoleMiddleware());
  }
}
