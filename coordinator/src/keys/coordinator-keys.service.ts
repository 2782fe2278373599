import { Inject, Injectable, Optional } from '@nestjs/common';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  describeCoordinatorKeys,
  keyBoxOpensWith,
  signModelManifest,
  signTask,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import type {
  CoordinatorKeyChain,
  CoordinatorKeys,
  SignedModelManifest,
  SignedTask,
  UpdateHeader,
} from '@fedssl/shared/protocol';
import { CLOCK, systemClock, type Clock } from '../config/clock';
import { CONFIG, DEFAULT_KEY_GRACE_SECONDS, LOGGER, type CoordinatorConfig } from '../config/config';
import {
  keyStatus,
  loadOrCreateKeyring,
  rotateKeyring,
  saveKeyring,
  type KeyStatus,
  type Keyring,
} from './coordinator-keyring';

export { coordinatorKeysFile } from './coordinator-keyring';

/** One coordinator key as `GET /coordinator/keys/history` lists it (public parts only). */
export interface CoordinatorKeyInfo extends CoordinatorKeys {
  createdAt: string;
  retiredAt: string | null;
  validUntil: string | null;
  status: KeyStatus;
}

/** What a rotation did. */
export interface CoordinatorKeyRotation {
  previousKeyId: string;
  keyId: string;
  fingerprint: string;
  previousKeyValidUntil: string;
}

/**
 * The coordinator's signing (Ed25519) and box (X25519) keys, with rotation: `keys` and
 * `keyId` are always the current pair, replaced keys are kept (box keys still open updates
 * in their grace period), and each rotation is announced signed by the key it replaces.
 *
 * Events: `'rotated'(CoordinatorKeyRotation)` after a rotation was saved (the gateway sends
 * the new chain to connected agents).
 */
@Injectable()
export class CoordinatorKeysService extends EventEmitter<{ rotated: [CoordinatorKeyRotation] }> {
  private ring: Keyring;
  private readonly log: Logger;
  private readonly dataDir: string;
  private readonly graceSeconds: number;
  private readonly clock: Clock;

  constructor(
    @Inject(CONFIG) config: CoordinatorConfig,
    @Inject(LOGGER) logger: Logger,
    @Optional() @Inject(CLOCK) clock?: Clock,
  ) {
    super();
    this.log = logger.child({ context: 'CoordinatorKeysService' });
    this.dataDir = config.dataDir;
    this.graceSeconds = config.keyGraceSeconds ?? DEFAULT_KEY_GRACE_SECONDS;
    this.clock = clock ?? systemClock;
    const { ring, created } = loadOrCreateKeyring(this.dataDir, new Date(this.clock.now()));
    this.ring = ring;
    if (created) this.log.info({ keyId: this.keyId }, 'created coordinator keys');
  }

  /** The current key pairs (what new tasks and manifests are signed with). */
  get keys(): PartyKeys {
    return this.ring.entries.at(-1)!.keys;
  }

  /** Key id of the current signing key. */
  get keyId(): string {
    return this.ring.entries.at(-1)!.keyId;
  }

  /** The public half, as agents pin it at enrollment and `GET /coordinator/keys` serves it. */
  publicKeys(): CoordinatorKeys {
    return describeCoordinatorKeys(this.keys.signing.publicKey, this.keys.box.publicKey);
  }

  /** Current keys and every rotation announcement, oldest first (what agents follow). */
  keyChain(): CoordinatorKeyChain {
    return { current: this.publicKeys(), chain: [...this.ring.announcements] };
  }

  /** Every key the coordinator held, oldest first, with its status now. */
  history(): CoordinatorKeyInfo[] {
    const now = this.clock.now();
    return this.ring.entries.map((e) => ({
      ...describeCoordinatorKeys(e.keys.signing.publicKey, e.keys.box.publicKey),
      createdAt: e.createdAt,
      retiredAt: e.retiredAt,
      validUntil: e.validUntil,
      status: keyStatus(e, now),
    }));
  }

  /**
   * Replaces the current key pairs with new ones (new key id), keeps the old pair for
   * `graceSeconds` (default: the configured grace), saves the keyring, then emits `'rotated'`.
   */
  rotate(graceSeconds = this.graceSeconds): CoordinatorKeyRotation {
    const now = new Date(this.clock.now());
    const next = rotateKeyring(this.ring, now, graceSeconds);
    try {
      saveKeyring(this.dataDir, next);
    } catch (e) {
      // Nothing changed: the keys in use stay the old ones.
      throw new FedsslError(
        'COORDINATOR_CONFIG_INVALID',
        `cannot write the coordinator key file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); if it is mounted read-only (e.g. a Kubernetes Secret), rotate offline with fedssl-coordinator rotate-keys and update the mount (docs/keys.md)`,
      );
    }
    this.ring = next;
    const a = next.announcements.at(-1)!.announcement;
    const rotation: CoordinatorKeyRotation = {
      previousKeyId: a.previousKeyId,
      keyId: a.keyId,
      fingerprint: a.fingerprint,
      previousKeyValidUntil: a.previousKeyValidUntil,
    };
    this.log.warn(rotation, 'coordinator keys rotated');
    this.emit('rotated', rotation);
    return rotation;
  }

  /**
   * The box secret key an update's content key was sealed to: the current key, or a replaced
   * one still in its grace period. Replaced keys past their grace are refused by name unless
   * `allowExpired` (an update accepted in time may be aggregated later). When no key opens the
   * box, the current key is returned so the opener reports ENVELOPE_KEY_UNSEALABLE.
   * @throws FedsslError COORDINATOR_KEY_EXPIRED naming the key id.
   */
  boxSecretKeyFor(header: UpdateHeader, opts: { allowExpired?: boolean } = {}): Uint8Array {
    const entries = this.ring.entries;
    const current = entries.at(-1)!;
    if (keyBoxOpensWith(header, current.keys.box.secretKey)) return current.keys.box.secretKey;
    const now = this.clock.now();
    for (const e of entries.slice(0, -1).reverse()) {
      if (!keyBoxOpensWith(header, e.keys.box.secretKey)) continue;
      if (keyStatus(e, now) === 'expired' && !opts.allowExpired) {
        throw new FedsslError(
          'COORDINATOR_KEY_EXPIRED',
          `update is sealed to coordinator key ${e.keyId}, replaced at ${e.retiredAt}; its grace period ended at ${e.validUntil}. Update the agent's pinned coordinator key (it follows the key chain on reconnect)`,
          { keyId: e.keyId, validUntil: e.validUntil },
        );
      }
      return e.keys.box.secretKey;
    }
    return current.keys.box.secretKey;
  }

  /** A stored task as it must go out now: signed by the current key, naming it. */
  currentTask(signed: SignedTask): SignedTask {
    if (signed.keyId === this.keyId) return signed;
    return signTask(signed.task, this.keys.signing.secretKey, this.keyId);
  }

  /**
   * A stored manifest as it must be served now: a version published before a rotation is
   * signed again by the current key (same manifest, so the same hashes), so agents that
   * follow the key chain keep verifying old versions.
   */
  currentManifest(signed: SignedModelManifest): SignedModelManifest {
    if (signed.keyId === this.keyId) return signed;
    return signModelManifest(signed.manifest, this.keys.signing.secretKey, this.keyId);
  }
}
