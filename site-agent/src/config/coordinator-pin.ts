import type { Logger } from 'pino';
import { followCoordinatorKeyChain, fromBase64 } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { coordinatorKeyChainSchema, type CoordinatorKeys } from '@fedssl/shared/protocol';
import { loadAgentConfig, requireEnrolled, saveAgentConfig } from './agent-config';

/**
 * The coordinator keys an agent trusts, as raw bytes for the task runner. One object for the
 * life of the process: a followed rotation replaces its fields in place, so every later
 * verification and seal uses the new keys.
 */
export interface PinnedCoordinatorKeys {
  signingPublicKey: Uint8Array;
  boxPublicKey: Uint8Array;
}

export function pinnedKeyBytes(keys: CoordinatorKeys): PinnedCoordinatorKeys {
  return {
    signingPublicKey: fromBase64(keys.signingPublicKey, 32),
    boxPublicKey: fromBase64(keys.boxPublicKey, 32),
  };
}

/** What {@link CoordinatorPin.accept} did with one `keys:announce`. */
export type PinOutcome =
  | { kind: 'unchanged' }
  | { kind: 'followed'; from: string; to: string; steps: number }
  | { kind: 'refused'; code: string; message: string };

/**
 * Follows the coordinator's key rotations from the key pinned at enrollment. A chain step
 * is taken only when signed by the pinned key; anything else keeps the pin and is logged at
 * error level (an attacker, a misconfigured proxy, or a coordinator restored from an old
 * backup: hospital IT should look). Followed pins are written to config.json.
 */
export class CoordinatorPin {
  private saving: Promise<void> = Promise.resolve();
  readonly bytes: PinnedCoordinatorKeys;

  constructor(
    private readonly home: string,
    private current: CoordinatorKeys,
    private readonly log: Logger,
  ) {
    this.bytes = pinnedKeyBytes(current);
  }

  /** The pinned keys now. */
  get keys(): CoordinatorKeys {
    return this.current;
  }

  /**
   * Handles one `keys:announce` message. Synchronous on the pin (a task signed by the new key
   * may follow on the same socket at once); the config file is written in the background,
   * in order ({@link flushed} waits for it).
   */
  accept(msg: unknown): PinOutcome {
    const parsed = coordinatorKeyChainSchema.safeParse(msg);
    if (!parsed.success) {
      this.log.error({ event: 'keys:announce' }, 'malformed coordinator key announcement ignored');
      return { kind: 'refused', code: 'PROTOCOL_INVALID_MESSAGE', message: 'malformed key announcement' };
    }
    const from = this.current.keyId;
    let next: CoordinatorKeys;
    let steps: number;
    try {
      const followed = followCoordinatorKeyChain(this.current, parsed.data.chain);
      next = followed.keys;
      steps = followed.followed.length;
    } catch (e) {
      const err =
        e instanceof FedsslError ? e : new FedsslError('COORDINATOR_KEY_ANNOUNCEMENT_INVALID', String(e));
      this.log.error(
        { code: err.code, pinnedKeyId: from, presentedKeyId: parsed.data.current.keyId },
        `REFUSED coordinator key announcement: ${err.message}. Tasks signed by another key will be refused; ask the consortium admin before re-enrolling`,
      );
      return { kind: 'refused', code: err.code, message: err.message };
    }
    if (next.keyId !== parsed.data.current.keyId) {
      this.log.error(
        {
          code: 'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
          pinnedKeyId: next.keyId,
          presentedKeyId: parsed.data.current.keyId,
        },
        'the coordinator presents a key that no announcement signed by the pinned key leads to; keeping the pinned key',
      );
      if (steps === 0) {
        return {
          kind: 'refused',
          code: 'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
          message: `coordinator key ${parsed.data.current.keyId} is not reachable from the pinned key ${next.keyId}`,
        };
      }
    }
    if (steps === 0) return { kind: 'unchanged' };
    this.current = next;
    const bytes = pinnedKeyBytes(next);
    this.bytes.signingPublicKey = bytes.signingPublicKey;
    this.bytes.boxPublicKey = bytes.boxPublicKey;
    this.log.warn(
      { fromKeyId: from, toKeyId: next.keyId, fingerprint: next.fingerprint, steps },
      'following coordinator key rotation (signed by the pinned key)',
    );
    this.saving = this.saving
      .then(() => this.save(next))
      .catch((e: unknown) => {
        this.log.error({ err: e }, 'could not save the new coordinator key to config.json');
      });
    return { kind: 'followed', from, to: next.keyId, steps };
  }

  /** Resolves once every followed pin is written to config.json. */
  flushed(): Promise<void> {
    return this.saving;
  }

  private async save(keys: CoordinatorKeys): Promise<void> {
    const config = requireEnrolled(await loadAgentConfig(this.home));
    await saveAgentConfig(this.home, { ...config, coordinator: keys });
  }
}
