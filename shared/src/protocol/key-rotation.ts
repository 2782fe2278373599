import { z } from 'zod';
import { base64Schema, coordinatorKeysSchema, idSchema } from './messages';

/**
 * Key rotation messages (docs/keys.md). A site replaces its keys with a request signed by
 * its current key and by the new one; the coordinator announces each new key of its own in
 * a document signed by the key it replaces, so an agent can follow the chain from the key
 * it pinned at enrollment without enrolling again.
 */

/** `keyId()` of a signing key: 16 lower-case hex characters. */
export const keyIdSchema = z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-character key id');

const isoTime = z.string().datetime({ offset: true });

// ---------------------------------------------------------------- site keys

/** What a site states when it replaces its keys. */
export const siteKeyRotationSchema = z
  .object({
    siteId: idSchema,
    /** The key being replaced: must be the site's current key. */
    previousKeyId: keyIdSchema,
    signingPublicKey: base64Schema(32),
    boxPublicKey: base64Schema(32),
    /** Freshness: the coordinator refuses a request far from its own clock. */
    issuedAt: isoTime,
    nonce: base64Schema(32),
  })
  .strict();
export type SiteKeyRotation = z.infer<typeof siteKeyRotationSchema>;

/**
 * `POST /api/v1/sites/:id/keys/rotate`: the rotation signed by the current key (it is this
 * site) and by the new key (the site holds it), both in the `siteKeyRotation` domain.
 */
export const signedSiteKeyRotationSchema = z
  .object({
    rotation: siteKeyRotationSchema,
    previousKeySignature: base64Schema(64),
    newKeySignature: base64Schema(64),
  })
  .strict();
export type SignedSiteKeyRotation = z.infer<typeof signedSiteKeyRotationSchema>;

export const siteKeyRotationResponseSchema = z
  .object({
    siteId: idSchema,
    keyId: keyIdSchema,
    previousKeyId: keyIdSchema,
    /** The old key is accepted for authentication and update signatures until then. */
    previousKeyValidUntil: isoTime,
  })
  .strict();
export type SiteKeyRotationResponse = z.infer<typeof siteKeyRotationResponseSchema>;

// ---------------------------------------------------------------- coordinator keys

/** The coordinator's next key pair, stated by (and signed with) the key it replaces. */
export const coordinatorKeyAnnouncementSchema = z
  .object({
    previousKeyId: keyIdSchema,
    keyId: keyIdSchema,
    signingPublicKey: base64Schema(32),
    boxPublicKey: base64Schema(32),
    fingerprint: z.string().max(200),
    issuedAt: isoTime,
    /** Until then the coordinator still opens updates sealed to the previous box key. */
    previousKeyValidUntil: isoTime,
  })
  .strict();
export type CoordinatorKeyAnnouncement = z.infer<typeof coordinatorKeyAnnouncementSchema>;

export const signedCoordinatorKeyAnnouncementSchema = z
  .object({ announcement: coordinatorKeyAnnouncementSchema, signature: base64Schema(64) })
  .strict();
export type SignedCoordinatorKeyAnnouncement = z.infer<typeof signedCoordinatorKeyAnnouncementSchema>;

/**
 * Coordinator → agent (`keys:announce`, after authentication and on every rotation), and
 * `GET /api/v1/coordinator/keys/chain`: the current keys and every announcement, oldest first.
 */
export const coordinatorKeyChainSchema = z
  .object({
    current: coordinatorKeysSchema,
    chain: z.array(signedCoordinatorKeyAnnouncementSchema).max(1000),
  })
  .strict();
export type CoordinatorKeyChain = z.infer<typeof coordinatorKeyChainSchema>;
