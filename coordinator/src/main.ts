import 'reflect-metadata';
import pino, { type Logger } from 'pino';
import { listenNestApp, type RunningCoordinator } from './admin/http/listen';
import { AppModule } from './app.module';
import type { CoordinatorConfig } from './config/config';
import type { CoreOptions } from './core.module';

export type { RunningCoordinator } from './admin/http/listen';

/**
 * Starts the coordinator: REST under `/api/v1` and socket.io (namespace `/agents`) on one
 * port. Logs `coordinator listening` with the URL once it accepts connections.
 *
 * @example
 * const c = await startCoordinator(loadConfig(process.env));
 * // … later
 * await c.close();
 */
export async function startCoordinator(
  config: CoordinatorConfig,
  logger: Logger = pino({ level: config.logLevel }),
  options: CoreOptions = {},
): Promise<RunningCoordinator> {
  return listenNestApp(AppModule.forRoot(config, logger, options), config, logger);
}
