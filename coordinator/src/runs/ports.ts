import type { NamedTensors } from '@fedssl/shared/codec';
import type { PartyKeys } from '@fedssl/shared/crypto';
import type { ModelConfig } from '@fedssl/shared/model';
import type {
  ModelHyperparameters,
  SignedModelManifest,
  SignedTask,
  UpdateHeader,
} from '@fedssl/shared/protocol';

/**
 * The narrow views of the platform services (sites, presence, model store, keys) that the
 * federation code needs. The real services satisfy them structurally; naming only what is
 * used keeps the round engine testable and independent of the platform's internals.
 */

/** What the engine needs to know about a site. */
export interface SiteView {
  id: string;
  name: string;
  signingPublicKey: string;
  status: 'pending' | 'enrolled' | 'revoked';
  /** The site's last reported number of training examples (null/absent: never reported). */
  exampleCount?: number | null;
}

export interface SiteDirectory {
  get(siteId: string): Promise<SiteView | undefined>;
}

/** Presence notifications (PresenceService is an EventEmitter with these events). */
export interface PresenceEvents {
  on(event: 'online' | 'revoked', listener: (siteId: string) => void): unknown;
  off(event: 'online' | 'revoked', listener: (siteId: string) => void): unknown;
}

export interface PublishArgs {
  version: string;
  runId: string | null;
  round: number;
  model: ModelConfig;
  weights: NamedTensors;
  parentVersion: string | null;
  parentSha256: string | null;
  sites: { siteId: string; exampleCount: number }[];
  strategy: string;
  hyperparameters?: ModelHyperparameters;
}

/** The signed model store. */
export interface ModelPublisher {
  publish(args: PublishArgs): SignedModelManifest;
  getManifest(version: string): SignedModelManifest | undefined;
  readWeights(version: string): NamedTensors;
}

/** The coordinator's key pairs (the current ones, plus the replaced ones in their grace period). */
export interface KeyHolder {
  /** The current key pairs. */
  readonly keys: PartyKeys;
  /** A stored task re-signed, if needed, by the current key (tasks outlive key rotations). */
  currentTask(signed: SignedTask): SignedTask;
  /** The box secret key an update was sealed to (current or replaced; COORDINATOR_KEY_EXPIRED unless allowExpired). */
  boxSecretKeyFor(header: UpdateHeader, opts?: { allowExpired?: boolean }): Uint8Array;
}
