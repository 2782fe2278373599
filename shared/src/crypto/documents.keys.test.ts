import { describe, it, expect } from 'vitest';
import { isFedsslError } from '../errors';
import type { SignedCoordinatorKeyAnnouncement, SiteKeyRotation } from '../protocol/key-rotation';
import { toBase64 } from './bytes';
import {
  describeCoordinatorKeys,
  followCoordinatorKeyChain,
  signCoordinatorKeyAnnouncement,
  signSiteKeyRotation,
  verifySignedSiteKeyRotation,
} from './documents';
import { generatePartyKeys, keyId, type PartyKeys } from './keys';
import { signJson } from './sign';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isFedsslError(e)) return e.code;
    throw e;
  }
  return 'no error';
}

const rotationFor = (siteId: string, oldKeys: PartyKeys, newKeys: PartyKeys): SiteKeyRotation => ({
  siteId,
  previousKeyId: keyId(oldKeys.signing.publicKey),
  signingPublicKey: toBase64(newKeys.signing.publicKey),
  boxPublicKey: toBase64(newKeys.box.publicKey),
  issuedAt: '2026-01-01T00:00:00.000Z',
  nonce: toBase64(new Uint8Array(32).fill(7)),
});

describe('site key rotation documents', () => {
  const oldKeys = generatePartyKeys();
  const newKeys = generatePartyKeys();
  const signed = signSiteKeyRotation(
    rotationFor('site-a', oldKeys, newKeys),
    oldKeys.signing.secretKey,
    newKeys.signing.secretKey,
  );

  it('verifies with the current key and returns the rotation', () => {
    expect(verifySignedSiteKeyRotation(signed, oldKeys.signing.publicKey)).toEqual(signed.rotation);
  });

  it('refuses a rotation checked against another key than the one it names', () => {
    const other = generatePartyKeys();
    expect(() => verifySignedSiteKeyRotation(signed, other.signing.publicKey)).toThrow(
      `key rotation names previous key ${keyId(oldKeys.signing.publicKey)}, not the site's current key ${keyId(other.signing.publicKey)}`,
    );
  });

  it('refuses when either signature is missing its key (no proof of possession, or not the site)', () => {
    const stranger = generatePartyKeys();
    // New key signed by someone else: the site does not prove it holds the new key.
    const noPossession = signSiteKeyRotation(
      rotationFor('site-a', oldKeys, newKeys),
      oldKeys.signing.secretKey,
      stranger.signing.secretKey,
    );
    expect(() => verifySignedSiteKeyRotation(noPossession, oldKeys.signing.publicKey)).toThrow(
      /not signed by the new key .* \(proof of possession failed\)/,
    );
    // Old signature made by a stranger claiming the site's key id.
    const notTheSite = signSiteKeyRotation(
      rotationFor('site-a', oldKeys, newKeys),
      stranger.signing.secretKey,
      newKeys.signing.secretKey,
    );
    expect(() => verifySignedSiteKeyRotation(notTheSite, oldKeys.signing.publicKey)).toThrow(
      `key rotation is not signed by the site's current key ${keyId(oldKeys.signing.publicKey)}`,
    );
  });

  it('refuses any changed field (signatures cover the whole rotation)', () => {
    const fields: (keyof SiteKeyRotation)[] = ['siteId', 'issuedAt', 'boxPublicKey', 'nonce'];
    const changed: Record<string, unknown> = {
      siteId: 'site-b',
      issuedAt: '2026-01-01T00:00:01.000Z',
      boxPublicKey: toBase64(generatePartyKeys().box.publicKey),
      nonce: toBase64(new Uint8Array(32).fill(8)),
    };
    for (const f of fields) {
      const tampered = { ...signed, rotation: { ...signed.rotation, [f]: changed[f] } };
      expect(codeOf(() => verifySignedSiteKeyRotation(tampered, oldKeys.signing.publicKey))).toBe(
        'SITE_KEY_ROTATION_INVALID',
      );
    }
  });

  it('a signature from another domain does not verify as a rotation', () => {
    const crossDomain = {
      ...signed,
      previousKeySignature: signJson(signed.rotation, oldKeys.signing.secretKey),
    };
    expect(codeOf(() => verifySignedSiteKeyRotation(crossDomain, oldKeys.signing.publicKey))).toBe(
      'SITE_KEY_ROTATION_INVALID',
    );
  });
});

/** A coordinator that rotated `n` times: its key pairs, oldest first, and the chain. */
function rotatedCoordinator(n: number): { keys: PartyKeys[]; chain: SignedCoordinatorKeyAnnouncement[] } {
  const keys = [generatePartyKeys()];
  const chain: SignedCoordinatorKeyAnnouncement[] = [];
  for (let i = 0; i < n; i++) {
    const prev = keys[keys.length - 1]!;
    const next = generatePartyKeys();
    keys.push(next);
    chain.push(
      signCoordinatorKeyAnnouncement(
        {
          previousKeyId: keyId(prev.signing.publicKey),
          ...describeCoordinatorKeys(next.signing.publicKey, next.box.publicKey),
          issuedAt: '2026-01-01T00:00:00.000Z',
          previousKeyValidUntil: '2026-01-02T00:00:00.000Z',
        },
        prev.signing.secretKey,
      ),
    );
  }
  return { keys, chain };
}

const pinOf = (k: PartyKeys) => describeCoordinatorKeys(k.signing.publicKey, k.box.publicKey);

describe('coordinator key chain', () => {
  it('follows every rotation from the pinned key, in any order, and ignores history before the pin', () => {
    const { keys, chain } = rotatedCoordinator(3);
    const shuffled = [chain[2]!, chain[0]!, chain[1]!];
    const fromFirst = followCoordinatorKeyChain(pinOf(keys[0]!), shuffled);
    expect(fromFirst.keys).toEqual(pinOf(keys[3]!));
    expect(fromFirst.followed.map((a) => a.keyId)).toEqual(
      keys.slice(1).map((k) => keyId(k.signing.publicKey)),
    );
    const fromSecond = followCoordinatorKeyChain(pinOf(keys[1]!), chain);
    expect(fromSecond.keys).toEqual(pinOf(keys[3]!));
    expect(fromSecond.followed).toHaveLength(2);
    expect(followCoordinatorKeyChain(pinOf(keys[3]!), chain)).toEqual({
      keys: pinOf(keys[3]!),
      followed: [],
    });
  });

  it('refuses an announcement not signed by the pinned key and keeps nothing of it', () => {
    const { keys, chain } = rotatedCoordinator(1);
    const attacker = generatePartyKeys();
    const forged = signCoordinatorKeyAnnouncement(
      {
        ...chain[0]!.announcement,
        ...describeCoordinatorKeys(attacker.signing.publicKey, attacker.box.publicKey),
      },
      attacker.signing.secretKey,
    );
    expect(() => followCoordinatorKeyChain(pinOf(keys[0]!), [forged])).toThrow(
      `an announcement of a new coordinator key is not validly signed by the pinned key ${keyId(keys[0]!.signing.publicKey)}; keeping the pinned key`,
    );
    // A forged sibling beside the real announcement also refuses the chain.
    expect(codeOf(() => followCoordinatorKeyChain(pinOf(keys[0]!), [chain[0]!, forged]))).toBe(
      'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
    );
  });

  it('refuses a correctly signed announcement whose fingerprint is not of its keys', () => {
    const { keys } = rotatedCoordinator(0);
    const next = generatePartyKeys();
    const lying = signCoordinatorKeyAnnouncement(
      {
        previousKeyId: keyId(keys[0]!.signing.publicKey),
        ...describeCoordinatorKeys(next.signing.publicKey, next.box.publicKey),
        fingerprint: describeCoordinatorKeys(keys[0]!.signing.publicKey, keys[0]!.box.publicKey).fingerprint,
        issuedAt: '2026-01-01T00:00:00.000Z',
        previousKeyValidUntil: '2026-01-02T00:00:00.000Z',
      },
      keys[0]!.signing.secretKey,
    );
    expect(codeOf(() => followCoordinatorKeyChain(pinOf(keys[0]!), [lying]))).toBe(
      'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
    );
  });

  it('every single-bit flip of a signed announcement is refused', () => {
    const { keys, chain } = rotatedCoordinator(1);
    const sig = Buffer.from(chain[0]!.signature, 'base64');
    for (let bit = 0; bit < sig.length * 8; bit += 29) {
      const flipped = Buffer.from(sig);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      const bad = { ...chain[0]!, signature: flipped.toString('base64') };
      expect(codeOf(() => followCoordinatorKeyChain(pinOf(keys[0]!), [bad]))).toBe(
        'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
      );
    }
  });
});
