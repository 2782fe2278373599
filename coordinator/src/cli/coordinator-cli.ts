#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { AdminTokenRepository, ADMIN_ROLES, type AdminRole } from '../admin/admin-token.repository';
import { AdminTokenService } from '../admin/admin-token.service';
import { systemClock } from '../config/clock';
import { loadConfig } from '../config/config';
import { startCoordinator } from '../main';
import { AuditLog } from '../audit/audit-log';
import { openStore } from '../store/open-store';
import type { SqlStore } from '../store/sql-store';
import { formatCliError, processIo, type CliIo } from './io';

/**
 * Creates an admin token directly in the store (no server needed) and returns it. Used to
 * get the first token on a fresh install; calling it again creates another.
 */
export async function bootstrapAdmin(
  env: NodeJS.ProcessEnv,
  name: string,
  role: AdminRole,
): Promise<{ token: string; id: string; existing: number }> {
  const config = loadConfig(env);
  const db: SqlStore = await openStore(config);
  try {
    // Logs go to stderr: stdout carries only the token.
    const logger = pino({ level: config.logLevel }, pino.destination(2));
    const repo = await new AdminTokenRepository(db).init();
    const audit = await new AuditLog(db, systemClock).init();
    const existing = (await repo.list()).filter((t) => t.role === 'admin' && t.revokedAt === null).length;
    const created = await new AdminTokenService(repo, audit, db, systemClock, logger).create(name, role);
    return { token: created.token, id: created.id, existing };
  } finally {
    await db.close();
  }
}

/** Runs `fedssl-coordinator`; resolves to the exit code (for `serve`, once the server stops). */
export async function runCoordinatorCli(
  argv: string[],
  io: CliIo = processIo,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let exit = 0;
  const program = new Command('fedssl-coordinator')
    .description('fedssl coordinator: federated self-supervised pretraining across hospitals')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });

  program
    .command('serve')
    .description('start the coordinator (configured by FEDSSL_* environment variables)')
    .action(async () => {
      const config = loadConfig(env);
      const logger = pino({ level: config.logLevel });
      const running = await startCoordinator(config, logger);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: NodeJS.Signals) => {
          if (stopping) {
            logger.warn({ signal }, 'second signal: exiting now');
            process.exit(1);
          }
          stopping = true;
          logger.info({ signal }, 'shutting down');
          running.close().then(
            () => {
              logger.info('coordinator stopped');
              resolve();
            },
            (e: unknown) => {
              logger.error({ err: e }, 'shutdown failed');
              exit = 1;
              resolve();
            },
          );
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });

  program
    .command('bootstrap-admin')
    .description('create an admin token directly in the store (FEDSSL_DATA_DIR); prints only the token')
    .option('--name <name>', 'token name', 'bootstrap')
    .option('--role <role>', `role (${ADMIN_ROLES.join('|')})`, 'admin')
    .action(async (o: { name: string; role: string }) => {
      if (!(ADMIN_ROLES as readonly string[]).includes(o.role)) {
        throw new Error(`--role must be one of ${ADMIN_ROLES.join('|')}`);
      }
      const r = await bootstrapAdmin(env, o.name, o.role as AdminRole);
      if (r.existing > 0) {
        io.stderr(
          `note: ${r.existing} active admin token(s) already existed; created another (id ${r.id})\n`,
        );
      } else {
        io.stderr(`created admin token ${r.id}\n`);
      }
      io.stdout(`${r.token}\n`);
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exit;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    io.stderr(formatCliError(e));
    return 1;
  }
}

if (require.main === module) {
  void runCoordinatorCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
