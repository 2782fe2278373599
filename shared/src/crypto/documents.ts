import { FedsslError } from '../errors';
import {
  modelManifestSchema,
  taskSchema,
  type ModelManifest,
  type SignedModelManifest,
  type SignedTask,
  type Task,
} from '../protocol/messages';
import {
  coordinatorKeyAnnouncementSchema,
  signedCoordinatorKeyAnnouncementSchema,
  signedSiteKeyRotationSchema,
  siteKeyRotationSchema,
  type CoordinatorKeyAnnouncement,
  type SignedCoordinatorKeyAnnouncement,
  type SignedSiteKeyRotation,
  type SiteKeyRotation,
} from '../protocol/key-rotation';
import type { CoordinatorKeys } from '../protocol/messages';
import { fromBase64, toBase64 } from './bytes';
import { SIGNING_PUBLIC_KEY_BYTES, fingerprint, keyId } from './keys';
import { signDomainJson, verifyDomainJson } from './sign';

/**
 * Documents the coordinator signs: tasks (what to train) and model manifests (what was
 * published). The signature covers the canonical JSON of the document in its own domain.
 */

/**
 * Drop object properties whose value is `undefined` (recursively). zod keeps an optional key
 * that was present as `undefined`; JSON transport would drop it, and canonicalJson refuses
 * it, so we normalize before signing.
 */
function withoutUndefined<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => withoutUndefined(v)) as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = withoutUndefined(v);
    return out as T;
  }
  return value;
}

function issues(error: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}

/**
 * Sign a task with the coordinator's Ed25519 secret key. The task is schema-checked first
 * (defaults filled in), and the returned `task` is exactly what was signed. `keyId` names
 * the signing key (a hint for the verifier, not signed).
 * @throws FedsslError PROTOCOL_INVALID_MESSAGE if the task does not match the schema.
 */
export function signTask(task: Task, secretKey: Uint8Array, keyId?: string): SignedTask {
  const parsed = taskSchema.safeParse(task);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `task does not match the schema: ${issues(parsed.error)}`,
    );
  }
  const clean = withoutUndefined(parsed.data);
  const signature = signDomainJson('task', clean, secretKey);
  return keyId === undefined ? { task: clean, signature } : { task: clean, signature, keyId };
}

/**
 * Check a signed task against the pinned coordinator key and return the parsed task.
 * The signature is checked over the task exactly as received, before any parsing.
 * @throws FedsslError TASK_SIGNATURE_INVALID on a bad signature or a malformed envelope;
 *   PROTOCOL_INVALID_MESSAGE if a correctly signed task does not match the schema.
 */
export function verifySignedTask(signed: SignedTask, coordinatorPublicKey: Uint8Array): Task {
  const st = signed as unknown as { task?: unknown; signature?: unknown } | null;
  if (
    typeof st !== 'object' ||
    st === null ||
    typeof st.signature !== 'string' ||
    !verifyDomainJson('task', st.task, st.signature, coordinatorPublicKey)
  ) {
    throw new FedsslError(
      'TASK_SIGNATURE_INVALID',
      'task signature does not verify against the pinned coordinator key',
    );
  }
  const parsed = taskSchema.safeParse(st.task);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `signed task does not match the schema: ${issues(parsed.error)}`,
    );
  }
  return parsed.data;
}

/**
 * Sign a model manifest. `keyId` (see `keyId()`) names the signing key so that a verifier
 * holding several coordinator keys can pick one; it is a hint and is not signed.
 * @throws FedsslError PROTOCOL_INVALID_MESSAGE if the manifest does not match the schema.
 */
export function signModelManifest(
  manifest: ModelManifest,
  secretKey: Uint8Array,
  keyId: string,
): SignedModelManifest {
  const parsed = modelManifestSchema.safeParse(manifest);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `model manifest does not match the schema: ${issues(parsed.error)}`,
    );
  }
  const clean = withoutUndefined(parsed.data);
  return { manifest: clean, signature: signDomainJson('manifest', clean, secretKey), keyId };
}

/**
 * Check a signed model manifest and return the parsed manifest.
 * @throws FedsslError MANIFEST_SIGNATURE_INVALID on a bad signature or malformed envelope;
 *   PROTOCOL_INVALID_MESSAGE if a correctly signed manifest does not match the schema.
 */
export function verifySignedModelManifest(
  signed: SignedModelManifest,
  coordinatorPublicKey: Uint8Array,
): ModelManifest {
  const sm = signed as unknown as { manifest?: unknown; signature?: unknown } | null;
  if (
    typeof sm !== 'object' ||
    sm === null ||
    typeof sm.signature !== 'string' ||
    !verifyDomainJson('manifest', sm.manifest, sm.signature, coordinatorPublicKey)
  ) {
    throw new FedsslError(
      'MANIFEST_SIGNATURE_INVALID',
      'model manifest signature does not verify against the pinned coordinator key',
    );
  }
  const parsed = modelManifestSchema.safeParse(sm.manifest);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `signed model manifest does not match the schema: ${issues(parsed.error)}`,
    );
  }
  return parsed.data;
}

// ---------------------------------------------------------------- key rotation

/**
 * Sign a site key rotation with both the current and the new signing secret key (the new
 * one proves the site holds it, so nobody can rotate a site onto a key it does not own).
 * @throws FedsslError PROTOCOL_INVALID_MESSAGE if the rotation does not match the schema.
 */
export function signSiteKeyRotation(
  rotation: SiteKeyRotation,
  previousSecretKey: Uint8Array,
  newSecretKey: Uint8Array,
): SignedSiteKeyRotation {
  const parsed = siteKeyRotationSchema.safeParse(rotation);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `key rotation does not match the schema: ${issues(parsed.error)}`,
    );
  }
  const clean = parsed.data;
  return {
    rotation: clean,
    previousKeySignature: signDomainJson('siteKeyRotation', clean, previousSecretKey),
    newKeySignature: signDomainJson('siteKeyRotation', clean, newSecretKey),
  };
}

/**
 * Check both signatures of a site key rotation: `previousSigningPublicKey` is the key the
 * coordinator holds for the site, the new key is the one inside the rotation.
 * @throws FedsslError SITE_KEY_ROTATION_INVALID naming which signature failed.
 */
export function verifySignedSiteKeyRotation(
  signed: SignedSiteKeyRotation,
  previousSigningPublicKey: Uint8Array,
): SiteKeyRotation {
  const parsed = signedSiteKeyRotationSchema.safeParse(signed);
  if (!parsed.success) {
    throw new FedsslError('SITE_KEY_ROTATION_INVALID', `malformed key rotation: ${issues(parsed.error)}`);
  }
  const { rotation, previousKeySignature, newKeySignature } = parsed.data;
  if (keyId(previousSigningPublicKey) !== rotation.previousKeyId) {
    throw new FedsslError(
      'SITE_KEY_ROTATION_INVALID',
      `key rotation names previous key ${rotation.previousKeyId}, not the site's current key ${keyId(previousSigningPublicKey)}`,
    );
  }
  if (!verifyDomainJson('siteKeyRotation', rotation, previousKeySignature, previousSigningPublicKey)) {
    throw new FedsslError(
      'SITE_KEY_ROTATION_INVALID',
      `key rotation is not signed by the site's current key ${rotation.previousKeyId}`,
    );
  }
  const newKey = fromBase64(rotation.signingPublicKey, SIGNING_PUBLIC_KEY_BYTES);
  if (!verifyDomainJson('siteKeyRotation', rotation, newKeySignature, newKey)) {
    throw new FedsslError(
      'SITE_KEY_ROTATION_INVALID',
      `key rotation is not signed by the new key ${keyId(newKey)} (proof of possession failed)`,
    );
  }
  return rotation;
}

/** The public half of a key pair as the coordinator publishes it (key id and fingerprint derived). */
export function describeCoordinatorKeys(
  signingPublicKey: Uint8Array,
  boxPublicKey: Uint8Array,
): CoordinatorKeys {
  return {
    keyId: keyId(signingPublicKey),
    signingPublicKey: toBase64(signingPublicKey),
    boxPublicKey: toBase64(boxPublicKey),
    fingerprint: fingerprint(signingPublicKey, boxPublicKey),
  };
}

/**
 * Sign the announcement of the coordinator's next key with the key it replaces.
 * @throws FedsslError PROTOCOL_INVALID_MESSAGE if the announcement does not match the schema.
 */
export function signCoordinatorKeyAnnouncement(
  announcement: CoordinatorKeyAnnouncement,
  previousSecretKey: Uint8Array,
): SignedCoordinatorKeyAnnouncement {
  const parsed = coordinatorKeyAnnouncementSchema.safeParse(announcement);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `key announcement does not match the schema: ${issues(parsed.error)}`,
    );
  }
  return {
    announcement: parsed.data,
    signature: signDomainJson('coordinatorKeyAnnouncement', parsed.data, previousSecretKey),
  };
}

/** An announcement is internally consistent: its key id and fingerprint are of its keys. */
function announcementConsistent(a: CoordinatorKeyAnnouncement): boolean {
  const d = describeCoordinatorKeys(fromBase64(a.signingPublicKey, 32), fromBase64(a.boxPublicKey, 32));
  return d.keyId === a.keyId && d.fingerprint === a.fingerprint;
}

/** Result of {@link followCoordinatorKeyChain}. */
export interface FollowedKeyChain {
  /** The keys to pin now (the input pin when nothing was followed). */
  keys: CoordinatorKeys;
  /** The announcements followed, in order. */
  followed: CoordinatorKeyAnnouncement[];
}

/**
 * Follow the coordinator's key chain from the pinned keys: each step must be an
 * announcement naming the pinned key as `previousKeyId`, signed by that pinned key, whose
 * key id and fingerprint match its keys. Announcements that do not start from the pinned
 * key (older history) are ignored; one that claims to and does not verify refuses the whole
 * chain, so an agent never moves its pin on a forged or corrupted announcement.
 * @throws FedsslError COORDINATOR_KEY_ANNOUNCEMENT_INVALID naming the key ids involved.
 */
export function followCoordinatorKeyChain(pinned: CoordinatorKeys, chain: unknown[]): FollowedKeyChain {
  let keys = pinned;
  const followed: CoordinatorKeyAnnouncement[] = [];
  const seen = new Set([pinned.keyId]);
  for (;;) {
    const claims = chain.filter(
      (c) =>
        (c as { announcement?: { previousKeyId?: unknown } } | null)?.announcement?.previousKeyId ===
        keys.keyId,
    );
    if (claims.length === 0) return { keys, followed };
    const pinnedKey = fromBase64(keys.signingPublicKey, SIGNING_PUBLIC_KEY_BYTES);
    let next: CoordinatorKeyAnnouncement | undefined;
    for (const claim of claims) {
      const parsed = signedCoordinatorKeyAnnouncementSchema.safeParse(claim);
      const ok =
        parsed.success &&
        verifyDomainJson(
          'coordinatorKeyAnnouncement',
          parsed.data.announcement,
          parsed.data.signature,
          pinnedKey,
        ) &&
        announcementConsistent(parsed.data.announcement);
      if (!ok || (next !== undefined && next.keyId !== parsed.data.announcement.keyId)) {
        throw new FedsslError(
          'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
          `an announcement of a new coordinator key is not validly signed by the pinned key ${keys.keyId}; keeping the pinned key`,
          { pinnedKeyId: keys.keyId },
        );
      }
      next = parsed.data.announcement;
    }
    if (!next || seen.has(next.keyId)) return { keys, followed };
    seen.add(next.keyId);
    followed.push(next);
    keys = {
      keyId: next.keyId,
      signingPublicKey: next.signingPublicKey,
      boxPublicKey: next.boxPublicKey,
      fingerprint: next.fingerprint,
    };
  }
}
