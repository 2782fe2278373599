import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import {
  boxKeyPairFromSecretKey,
  describeCoordinatorKeys,
  fromBase64,
  generatePartyKeys,
  keyId,
  signCoordinatorKeyAnnouncement,
  signingKeyPairFromSecretKey,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  signedCoordinatorKeyAnnouncementSchema,
  type SignedCoordinatorKeyAnnouncement,
} from '@fedssl/shared/protocol';

/**
 * The coordinator's keyring on disk: every key pair it ever held (newest = current) and the
 * signed announcement of each rotation. Old secret keys are kept so that updates sealed to
 * a replaced box key can still be opened in the grace period (and recognised after it).
 */

/** One key pair of the coordinator with its life cycle. */
export interface KeyringEntry {
  keys: PartyKeys;
  keyId: string;
  createdAt: string;
  /** When a newer key replaced it; null for the current key. */
  retiredAt: string | null;
  /** End of its grace period; null for the current key. */
  validUntil: string | null;
}

export interface Keyring {
  /** Oldest first; the last entry is the current key. */
  entries: KeyringEntry[];
  /** One per rotation, oldest first. */
  announcements: SignedCoordinatorKeyAnnouncement[];
}

/** The first format: one key pair, no history (read, never written any more). */
const v1Schema = z
  .object({
    format: z.literal('fedssl-coordinator-keys-v1'),
    signingSecretKey: z.string(),
    boxSecretKey: z.string(),
    createdAt: z.string(),
  })
  .strict();

const entrySchema = z
  .object({
    signingSecretKey: z.string(),
    boxSecretKey: z.string(),
    createdAt: z.string(),
    retiredAt: z.string().nullable(),
    validUntil: z.string().nullable(),
  })
  .strict();

const keyringSchema = z
  .object({
    format: z.literal('fedssl-coordinator-keyring-v1'),
    keys: z.array(entrySchema).min(1),
    announcements: z.array(signedCoordinatorKeyAnnouncementSchema),
  })
  .strict();

/** Path of the coordinator's key file inside the data directory. */
export function coordinatorKeysFile(dataDir: string): string {
  return join(dataDir, 'keys', 'coordinator-keys.json');
}

function entry(
  signingSecretKey: string,
  boxSecretKey: string,
  createdAt: string,
  retiredAt: string | null,
  validUntil: string | null,
): KeyringEntry {
  const keys = {
    signing: signingKeyPairFromSecretKey(fromBase64(signingSecretKey, 64)),
    box: boxKeyPairFromSecretKey(fromBase64(boxSecretKey, 32)),
  };
  return { keys, keyId: keyId(keys.signing.publicKey), createdAt, retiredAt, validUntil };
}

/** Parses a key file (either format); only public keys are derived, never stored twice. */
function parseKeyring(text: string): Keyring {
  const json = JSON.parse(text) as { format?: unknown };
  if (json.format === 'fedssl-coordinator-keys-v1') {
    const v1 = v1Schema.parse(json);
    return {
      entries: [entry(v1.signingSecretKey, v1.boxSecretKey, v1.createdAt, null, null)],
      announcements: [],
    };
  }
  const k = keyringSchema.parse(json);
  const entries = k.keys.map((e) =>
    entry(e.signingSecretKey, e.boxSecretKey, e.createdAt, e.retiredAt, e.validUntil),
  );
  if (entries.at(-1)!.retiredAt !== null) throw new Error('the newest key is marked retired');
  return { entries, announcements: k.announcements };
}

/** Writes the keyring atomically, 0600 from the first byte. */
export function saveKeyring(dataDir: string, ring: Keyring): void {
  const file = coordinatorKeysFile(dataDir);
  mkdirSync(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
  const body = JSON.stringify(
    {
      format: 'fedssl-coordinator-keyring-v1',
      keys: ring.entries.map((e) => ({
        signingSecretKey: toBase64(e.keys.signing.secretKey),
        boxSecretKey: toBase64(e.keys.box.secretKey),
        createdAt: e.createdAt,
        retiredAt: e.retiredAt,
        validUntil: e.validUntil,
      })),
      announcements: ring.announcements,
    },
    null,
    2,
  );
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, body, { mode: 0o600, flag: 'w' });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/**
 * Loads the keyring, creating a first key pair when there is no file.
 * @returns the keyring and whether it was just created.
 * @throws FedsslError COORDINATOR_CONFIG_INVALID for an unreadable or malformed file (never regenerated).
 */
export function loadOrCreateKeyring(dataDir: string, now: Date): { ring: Keyring; created: boolean } {
  const file = coordinatorKeysFile(dataDir);
  if (existsSync(file)) {
    try {
      return { ring: parseKeyring(readFileSync(file, 'utf8')), created: false };
    } catch (e) {
      // Never silently regenerate: every enrolled site pinned these keys.
      throw new FedsslError(
        'COORDINATOR_CONFIG_INVALID',
        `coordinator key file ${file} is unreadable or malformed; restore it from backup (sites have pinned these keys)`,
        { cause: e instanceof Error ? e.message : String(e) },
      );
    }
  }
  const keys = generatePartyKeys();
  const ring: Keyring = {
    entries: [
      {
        keys,
        keyId: keyId(keys.signing.publicKey),
        createdAt: now.toISOString(),
        retiredAt: null,
        validUntil: null,
      },
    ],
    announcements: [],
  };
  saveKeyring(dataDir, ring);
  return { ring, created: true };
}

/**
 * A new current key pair; the previous one is retired with a grace period of `graceSeconds`,
 * and the rotation is announced in a document signed by the previous signing key. Pure:
 * returns the new keyring (the caller saves it).
 */
export function rotateKeyring(ring: Keyring, now: Date, graceSeconds: number): Keyring {
  const previous = ring.entries.at(-1)!;
  const next = generatePartyKeys();
  const validUntil = new Date(now.getTime() + graceSeconds * 1000).toISOString();
  const announcement = signCoordinatorKeyAnnouncement(
    {
      previousKeyId: previous.keyId,
      ...describeCoordinatorKeys(next.signing.publicKey, next.box.publicKey),
      issuedAt: now.toISOString(),
      previousKeyValidUntil: validUntil,
    },
    previous.keys.signing.secretKey,
  );
  return {
    entries: [
      ...ring.entries.slice(0, -1),
      { ...previous, retiredAt: now.toISOString(), validUntil },
      {
        keys: next,
        keyId: keyId(next.signing.publicKey),
        createdAt: now.toISOString(),
        retiredAt: null,
        validUntil: null,
      },
    ],
    announcements: [...ring.announcements, announcement],
  };
}

/** Where a key is in its life: current, replaced but still accepted, or refused. */
export type KeyStatus = 'current' | 'grace' | 'expired';

export function keyStatus(e: Pick<KeyringEntry, 'validUntil'>, nowMs: number): KeyStatus {
  if (e.validUntil === null) return 'current';
  return Date.parse(e.validUntil) > nowMs ? 'grace' : 'expired';
}
