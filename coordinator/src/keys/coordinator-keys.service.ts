import { Inject, Injectable } from '@nestjs/common';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  boxKeyPairFromSecretKey,
  fingerprint,
  fromBase64,
  generatePartyKeys,
  keyId,
  signingKeyPairFromSecretKey,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import type { CoordinatorKeys } from '@fedssl/shared/protocol';
import { CONFIG, LOGGER, type CoordinatorConfig } from '../config/config';

const keyFileSchema = z
  .object({
    format: z.literal('fedssl-coordinator-keys-v1'),
    signingSecretKey: z.string(),
    boxSecretKey: z.string(),
    createdAt: z.string(),
  })
  .strict();

/** Path of the coordinator's key file inside the data directory. */
export function coordinatorKeysFile(dataDir: string): string {
  return join(dataDir, 'keys', 'coordinator-keys.json');
}

/**
 * Loads the coordinator's keys from `<dataDir>/keys/coordinator-keys.json`, creating them
 * on first start. Only public keys are derived from the file (never stored twice) so a
 * hand-edited public key cannot disagree with its secret.
 */
export function loadOrCreateCoordinatorKeys(dataDir: string, logger: Logger): PartyKeys {
  const file = coordinatorKeysFile(dataDir);
  if (existsSync(file)) {
    let parsed: z.infer<typeof keyFileSchema>;
    try {
      parsed = keyFileSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
      return {
        signing: signingKeyPairFromSecretKey(fromBase64(parsed.signingSecretKey, 64)),
        box: boxKeyPairFromSecretKey(fromBase64(parsed.boxSecretKey, 32)),
      };
    } catch (e) {
      // Never silently regenerate: every enrolled site pinned the old keys.
      throw new FedsslError(
        'COORDINATOR_CONFIG_INVALID',
        `coordinator key file ${file} is unreadable or malformed; restore it from backup (sites have pinned these keys)`,
        { cause: e instanceof Error ? e.message : String(e) },
      );
    }
  }
  const keys = generatePartyKeys();
  mkdirSync(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
  const body = JSON.stringify(
    {
      format: 'fedssl-coordinator-keys-v1',
      signingSecretKey: toBase64(keys.signing.secretKey),
      boxSecretKey: toBase64(keys.box.secretKey),
      createdAt: new Date().toISOString(),
    },
    null,
    2,
  );
  const tmp = `${file}.tmp-${process.pid}`;
  // Created 0600 from the start so the secret is never world-readable, even briefly.
  writeFileSync(tmp, body, { mode: 0o600, flag: 'wx' });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  logger.info({ keyId: keyId(keys.signing.publicKey) }, 'created coordinator keys');
  return keys;
}

/** The coordinator's signing (Ed25519) and box (X25519) keys. */
@Injectable()
export class CoordinatorKeysService {
  readonly keys: PartyKeys;
  readonly keyId: string;
  private readonly published: CoordinatorKeys;

  constructor(@Inject(CONFIG) config: CoordinatorConfig, @Inject(LOGGER) logger: Logger) {
    const log = logger.child({ context: 'CoordinatorKeysService' });
    this.keys = loadOrCreateCoordinatorKeys(config.dataDir, log);
    this.keyId = keyId(this.keys.signing.publicKey);
    this.published = Object.freeze({
      keyId: this.keyId,
      signingPublicKey: toBase64(this.keys.signing.publicKey),
      boxPublicKey: toBase64(this.keys.box.publicKey),
      fingerprint: fingerprint(this.keys.signing.publicKey, this.keys.box.publicKey),
    });
  }

  /** The public half, as agents pin it at enrollment and `GET /coordinator/keys` serves it. */
  publicKeys(): CoordinatorKeys {
    return { ...this.published };
  }
}
