import { fromBase64 } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import type { SiteKeyRecord } from './site.repository';

/** Where a site key is in its life: current, replaced but still accepted, or refused. */
export type SiteKeyStatus = 'current' | 'grace' | 'expired';

export function siteKeyStatus(k: Pick<SiteKeyRecord, 'validUntil'>, nowMs: number): SiteKeyStatus {
  if (k.validUntil === null) return 'current';
  return Date.parse(k.validUntil) > nowMs ? 'grace' : 'expired';
}

/** What {@link signingKeyFor} needs of a site (the registry's record; test doubles may omit `keys`). */
export interface SiteKeysView {
  id: string;
  signingPublicKey: string;
  keys?: readonly SiteKeyRecord[];
}

/**
 * The signing key to check a site's signature with: the current key, or a replaced one in
 * its grace period, whichever `verifies`. A replaced key past its grace is refused by name.
 * When no key verifies the current key is returned, so the caller's own check fails with
 * its usual error (ENVELOPE_SIGNATURE_INVALID, SITE_AUTH_FAILED).
 * @throws FedsslError SITE_KEY_EXPIRED naming the key id and when its grace ended.
 */
export function signingKeyFor(
  site: SiteKeysView,
  nowMs: number,
  verifies: (signingPublicKey: Uint8Array) => boolean,
): Uint8Array {
  const current = fromBase64(site.signingPublicKey, 32);
  if (verifies(current)) return current;
  for (const k of [...(site.keys ?? [])].reverse()) {
    if (k.signingPublicKey === site.signingPublicKey) continue;
    const pk = fromBase64(k.signingPublicKey, 32);
    if (!verifies(pk)) continue;
    if (siteKeyStatus(k, nowMs) === 'expired') {
      throw new FedsslError(
        'SITE_KEY_EXPIRED',
        `site ${site.id} signed with key ${k.keyId}, replaced at ${k.retiredAt}; its grace period ended at ${k.validUntil}. Restart the agent so it uses its new keys`,
        { siteId: site.id, keyId: k.keyId, validUntil: k.validUntil },
      );
    }
    return pk;
  }
  return current;
}

/**
 * `verifies` with each key's answer remembered, so a caller that asks {@link signingKeyFor}
 * for the key and then checks the returned key pays for one signature check per key, not two.
 */
export function rememberingVerifier(
  verifies: (signingPublicKey: Uint8Array) => boolean,
): (signingPublicKey: Uint8Array) => boolean {
  const answers = new WeakMap<Uint8Array, boolean>();
  return (pk) => {
    let ok = answers.get(pk);
    if (ok === undefined) answers.set(pk, (ok = verifies(pk)));
    return ok;
  };
}
