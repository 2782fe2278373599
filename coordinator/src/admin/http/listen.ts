import 'reflect-metadata';
import { Module, RequestMethod, type DynamicModule, type INestApplication, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { IoAdapter } from '@nestjs/platform-socket.io';
import { Logger as PinoNestLogger, LoggerModule } from 'nestjs-pino';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { ServerOptions } from 'socket.io';
import { bulkBackend, signatureBackend } from '@fedssl/shared/crypto';
import { MAX_CHUNK_BYTES } from '@fedssl/shared/protocol';
import type { CoordinatorConfig } from '../../config/config';
import { setupOpenApi } from '../../ops/openapi';

/** REST prefix; every endpoint lives under it. */
export const API_PREFIX = 'api/v1';

/** socket.io frame limit: one data chunk plus room for its envelope fields. */
export const MAX_HTTP_BUFFER_SIZE = MAX_CHUNK_BYTES + 64 * 1024;

/** socket.io on the HTTP server's port, with frames big enough for one chunk. */
class FedsslIoAdapter extends IoAdapter {
  override createIOServer(port: number, options?: ServerOptions): unknown {
    return super.createIOServer(port, { ...options, maxHttpBufferSize: MAX_HTTP_BUFFER_SIZE });
  }
}

/** A listening coordinator (HTTP + socket.io on one port). */
export interface RunningCoordinator {
  app: INestApplication;
  url: string;
  port: number;
  /** Stops accepting connections, runs shutdown hooks (closes the database). */
  close(): Promise<void>;
}

/**
 * Creates the Nest app for `rootModule`, wires pino, the socket.io adapter and the API
 * prefix, and listens on `config.host:config.port` (0 = any free port).
 */
export async function listenNestApp(
  rootModule: DynamicModule | Type<unknown>,
  config: CoordinatorConfig,
  logger: Logger,
): Promise<RunningCoordinator> {
  @Module({
    imports: [
      LoggerModule.forRoot({
        pinoHttp: {
          logger,
          autoLogging: false,
          quietReqLogger: true,
          // Never the Authorization header or bodies: method and path only.
          serializers: {
            req: (req: { method?: string; url?: string }) => ({ method: req.method, url: req.url }),
          },
        },
        // path-to-regexp v8 wildcard syntax (the default '*' triggers a legacy-route warning).
        forRoutes: [{ path: '{*splat}', method: RequestMethod.ALL }],
      }),
      rootModule,
    ],
  })
  class HttpRootModule {}

  const app = await NestFactory.create<NestExpressApplication>(HttpRootModule, {
    bufferLogs: true,
    abortOnError: false,
  });
  app.useLogger(app.get(PinoNestLogger));
  app.setGlobalPrefix(API_PREFIX);
  app.useBodyParser('json', { limit: '1mb' });
  app.useWebSocketAdapter(new FedsslIoAdapter(app));
  setupOpenApi(app);
  // No enableShutdownHooks(): app.close() runs the shutdown hooks; signals are the CLI's job.
  await app.listen(config.port, config.host);

  const address = app.getHttpServer().address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  // bulkCrypto: which secretbox implementation opens update chunks (sodium-native or the tweetnacl
  // fallback); signatures: which Ed25519 implementation signs and verifies (node-crypto or tweetnacl).
  logger.info(
    { url, port: address.port, bulkCrypto: bulkBackend().name, signatures: signatureBackend() },
    'coordinator listening',
  );
  let closed: Promise<void> | undefined;
  return {
    app,
    url,
    port: address.port,
    close: () => (closed ??= app.close()),
  };
}
