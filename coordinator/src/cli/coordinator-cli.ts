#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { AdminTokenRepository, ADMIN_ROLES, type AdminRole } from '../admin/admin-token.repository';
import { AdminTokenService } from '../admin/admin-token.service';
import { describeCoordinatorKeys } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { systemClock } from '../config/clock';
import { DEFAULT_KEY_GRACE_SECONDS, loadConfig, type CoordinatorConfig } from '../config/config';
import { existsSync } from 'node:fs';
import {
  coordinatorKeysFile,
  loadOrCreateKeyring,
  rotateKeyring,
  saveKeyring,
} from '../keys/coordinator-keyring';
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

/**
 * The coordinator's current key id and fingerprint, read from the data directory (keys are
 * created on first use, as `serve` would). The same string `fedssl-agent enroll` and
 * `fedssl-agent show-coordinator` print, for comparison out of band.
 */
export function coordinatorFingerprint(env: NodeJS.ProcessEnv): { keyId: string; fingerprint: string } {
  const config = loadConfig(env);
  requireKeyFile(config.dataDir);
  const { ring } = loadOrCreateKeyring(config.dataDir, new Date());
  const current = ring.entries.at(-1)!.keys;
  const d = describeCoordinatorKeys(current.signing.publicKey, current.box.publicKey);
  return { keyId: d.keyId, fingerprint: d.fingerprint };
}

/**
 * Key commands never create keys: a fingerprint of keys made up on the spot (a mistyped
 * FEDSSL_DATA_DIR) would be read to hospital IT as the coordinator's.
 * @throws FedsslError COORDINATOR_CONFIG_INVALID when there is no key file.
 */
function requireKeyFile(dataDir: string): void {
  if (!existsSync(coordinatorKeysFile(dataDir))) {
    throw new FedsslError(
      'COORDINATOR_CONFIG_INVALID',
      `no coordinator keys in ${dataDir}: check FEDSSL_DATA_DIR (the coordinator creates its keys when it first starts)`,
    );
  }
}

/** True when something answers `/healthz` where this config would serve. */
async function coordinatorAnswers(config: CoordinatorConfig): Promise<boolean> {
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  try {
    await fetch(`http://${host.includes(':') ? `[${host}]` : host}:${config.port}/healthz`, {
      signal: AbortSignal.timeout(1500),
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * Rotates the coordinator keys on disk, for a stopped coordinator (a running one holds its
 * keys in memory: rotate through `POST /api/v1/coordinator/keys/rotate` instead, which also
 * tells connected agents at once). Records the rotation in the audit log.
 * @throws FedsslError COORDINATOR_CONFIG_INVALID when a coordinator answers on the configured port.
 */
export async function rotateCoordinatorKeysOffline(
  env: NodeJS.ProcessEnv,
  graceSeconds?: number,
): Promise<{ previousKeyId: string; keyId: string; fingerprint: string; previousKeyValidUntil: string }> {
  const config = loadConfig(env);
  if (config.port !== 0 && (await coordinatorAnswers(config))) {
    throw new FedsslError(
      'COORDINATOR_CONFIG_INVALID',
      `a coordinator is running on port ${config.port}; rotate its keys through the admin API (POST /api/v1/coordinator/keys/rotate, or fedssl-admin keys rotate) so it and its agents switch at once`,
    );
  }
  requireKeyFile(config.dataDir);
  const now = new Date();
  const { ring } = loadOrCreateKeyring(config.dataDir, now);
  const next = rotateKeyring(ring, now, graceSeconds ?? config.keyGraceSeconds ?? DEFAULT_KEY_GRACE_SECONDS);
  saveKeyring(config.dataDir, next);
  const a = next.announcements.at(-1)!.announcement;
  const rotation = {
    previousKeyId: a.previousKeyId,
    keyId: a.keyId,
    fingerprint: a.fingerprint,
    previousKeyValidUntil: a.previousKeyValidUntil,
  };
  const db: SqlStore = await openStore(config);
  try {
    const audit = await new AuditLog(db, systemClock).init();
    await audit.append('system', 'coordinator.keys-rotated', rotation.keyId, { ...rotation, via: 'cli' });
  } finally {
    await db.close();
  }
  return rotation;
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
      // Loaded here: the other commands do not need Nest and the whole app.
      const { startCoordinator } = await import('../main.js');
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

  program
    .command('fingerprint')
    .description(
      "print the coordinator's key fingerprint (FEDSSL_DATA_DIR) to read to hospital IT; the key id goes to stderr",
    )
    .action(() => {
      const f = coordinatorFingerprint(env);
      io.stderr(`coordinator key id ${f.keyId}\n`);
      io.stdout(`${f.fingerprint}\n`);
    });

  program
    .command('rotate-keys')
    .description(
      'new coordinator keys for a STOPPED coordinator (a running one: POST /api/v1/coordinator/keys/rotate); agents follow on reconnect',
    )
    .option(
      '--grace-seconds <n>',
      'how long the old keys stay accepted (default FEDSSL_KEY_GRACE_SECONDS, 24 h)',
    )
    .action(async (o: { graceSeconds?: string }) => {
      let grace: number | undefined;
      if (o.graceSeconds !== undefined) {
        if (!/^\d{1,9}$/.test(o.graceSeconds)) throw new Error('--grace-seconds must be whole seconds');
        grace = Number(o.graceSeconds);
      }
      const r = await rotateCoordinatorKeysOffline(env, grace);
      io.stderr(
        `rotated coordinator keys ${r.previousKeyId} -> ${r.keyId}; the old keys are accepted until ${r.previousKeyValidUntil}\n`,
      );
      io.stdout(`${r.fingerprint}\n`);
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
