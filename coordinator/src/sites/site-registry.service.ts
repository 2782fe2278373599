import { Inject, Injectable, Optional, type OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import { fromBase64, keyId, toBase64, verifySignedSiteKeyRotation } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  signedSiteKeyRotationSchema,
  type AgentStatus,
  type SignedSiteKeyRotation,
  type SiteKeyRotationResponse,
} from '@fedssl/shared/protocol';
import { CONFIG, DEFAULT_KEY_GRACE_SECONDS, LOGGER, type CoordinatorConfig } from '../config/config';
import { CLOCK, isoNow, type Clock } from '../config/clock';
import { AuditLog, type AuditActor } from '../audit/audit-log';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { PresenceService } from './presence.service';
import { signingKeyFor, type SiteKeysView } from './site-keys';
import { SiteRepository, type SiteRecord } from './site.repository';

export type { SiteRecord } from './site.repository';

const keyIdOf = (signingPublicKeyB64: string): string => keyId(fromBase64(signingPublicKeyB64, 32));

/** How far a rotation request's `issuedAt` may be from the coordinator's clock. */
export const ROTATION_MAX_SKEW_MS = 10 * 60_000;

/** The registry of sites: lookup, status reports from agents, revocation. */
@Injectable()
export class SiteRegistryService implements OnModuleDestroy {
  private readonly log: Logger;
  private readonly graceSeconds: number;
  /** Ends of grace periods in this process (a restart needs none: every connection re-authenticates). */
  private readonly graceTimers = new Set<NodeJS.Timeout>();

  constructor(
    @Inject(SiteRepository) private readonly repo: SiteRepository,
    @Inject(PresenceService) private readonly presence: PresenceService,
    @Inject(SQL_STORE) private readonly db: SqlStore,
    @Inject(AuditLog) private readonly audit: AuditLog,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(LOGGER) logger: Logger,
    @Optional() @Inject(CONFIG) config?: CoordinatorConfig,
  ) {
    this.log = logger.child({ context: 'SiteRegistryService' });
    this.graceSeconds = config?.keyGraceSeconds ?? DEFAULT_KEY_GRACE_SECONDS;
  }

  onModuleDestroy(): void {
    for (const t of this.graceTimers) clearTimeout(t);
    this.graceTimers.clear();
  }

  /** At the end of a replaced key's grace period, connections still using it are dropped. */
  private scheduleGraceEnd(siteId: string, keyId: string, validUntil: string): void {
    const t = setTimeout(
      () => {
        this.graceTimers.delete(t);
        this.presence.announceKeyExpired(siteId, keyId);
      },
      Math.min(Math.max(0, Date.parse(validUntil) - this.clock.now()), 2_147_483_647),
    );
    t.unref();
    this.graceTimers.add(t);
  }

  /** {@link signingKeyFor} at the registry's clock: which of a site's keys to check a signature with. */
  signingKeyFor(site: SiteKeysView, verifies: (signingPublicKey: Uint8Array) => boolean): Uint8Array {
    return signingKeyFor(site, this.clock.now(), verifies);
  }

  /**
   * Replaces a site's keys. The request must be signed by the site's current key and by
   * the new key, and be fresh; the old key stays accepted for the grace period. Sending the
   * same rotation again after it succeeded answers the same result (an agent that crashed
   * before saving its new keys can retry).
   * @throws FedsslError SITE_NOT_FOUND, SITE_REVOKED, SITE_KEY_ROTATION_INVALID, ENROLLMENT_KEY_IN_USE
   */
  async rotateKeys(siteId: string, body: SignedSiteKeyRotation): Promise<SiteKeyRotationResponse> {
    const parsed = signedSiteKeyRotationSchema.safeParse(body);
    if (!parsed.success) {
      throw new FedsslError(
        'SITE_KEY_ROTATION_INVALID',
        parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '),
      );
    }
    const signed = parsed.data;
    const r = signed.rotation;
    if (r.siteId !== siteId) {
      throw new FedsslError('SITE_KEY_ROTATION_INVALID', `rotation is for site ${r.siteId}, not ${siteId}`);
    }
    const newSigning = toBase64(fromBase64(r.signingPublicKey, 32));
    const newBox = toBase64(fromBase64(r.boxPublicKey, 32));
    const nowMs = this.clock.now();
    const now = new Date(nowMs).toISOString();
    const result = await this.db.transaction(async () => {
      const site = await this.require(siteId);
      if (site.status === 'revoked') {
        throw new FedsslError('SITE_REVOKED', `site ${siteId} is revoked`, { siteId });
      }
      if (site.status !== 'enrolled') {
        throw new FedsslError('SITE_KEY_ROTATION_INVALID', `site ${siteId} has not completed enrollment`);
      }
      const previous = site.keys.find((k) => k.keyId === r.previousKeyId);
      // Already done (a retry): answer the same, after checking it is the same signed request.
      if (newSigning === site.signingPublicKey && previous && previous.validUntil !== null) {
        verifySignedSiteKeyRotation(signed, fromBase64(previous.signingPublicKey, 32));
        return { keyId: site.keys.at(-1)!.keyId, validUntil: previous.validUntil, rotated: false };
      }
      // Only the current key may rotate: a replaced key (maybe the leaked one) cannot.
      verifySignedSiteKeyRotation(signed, fromBase64(site.signingPublicKey, 32));
      if (Math.abs(Date.parse(r.issuedAt) - nowMs) > ROTATION_MAX_SKEW_MS) {
        throw new FedsslError(
          'SITE_KEY_ROTATION_INVALID',
          `rotation was issued at ${r.issuedAt}, more than ${ROTATION_MAX_SKEW_MS / 60_000} minutes from the coordinator's clock (${now}); check the agent's clock`,
        );
      }
      if (newSigning === newBox) {
        throw new FedsslError(
          'SITE_KEY_ROTATION_INVALID',
          'signingPublicKey and boxPublicKey must be different keys',
        );
      }
      if ((await this.repo.siteOfKey(newSigning)) || (await this.repo.getBySigningKey(newSigning))) {
        throw new FedsslError(
          'ENROLLMENT_KEY_IN_USE',
          'this signing key was already registered; generate new keys',
        );
      }
      const validUntil = new Date(nowMs + this.graceSeconds * 1000).toISOString();
      const newKeyId = keyIdOf(newSigning);
      if (!(await this.repo.retireKey(siteId, r.previousKeyId, now, validUntil))) {
        throw new FedsslError(
          'SITE_KEY_ROTATION_INVALID',
          `key ${r.previousKeyId} is no longer the site's current key (another rotation was applied first)`,
        );
      }
      await this.repo.insertKey({
        siteId,
        keyId: newKeyId,
        signingPublicKey: newSigning,
        boxPublicKey: newBox,
        createdAt: now,
      });
      await this.repo.setCurrentKeys(siteId, newSigning, newBox);
      await this.audit.append(`site:${siteId}`, 'site.keys-rotated', siteId, {
        previousKeyId: r.previousKeyId,
        keyId: newKeyId,
        previousKeyValidUntil: validUntil,
      });
      return { keyId: newKeyId, validUntil, rotated: true };
    });
    if (result.rotated) {
      this.scheduleGraceEnd(siteId, r.previousKeyId, result.validUntil);
      this.log.warn(
        {
          siteId,
          previousKeyId: r.previousKeyId,
          keyId: result.keyId,
          previousKeyValidUntil: result.validUntil,
        },
        'site keys rotated',
      );
    }
    return {
      siteId,
      keyId: result.keyId,
      previousKeyId: r.previousKeyId,
      previousKeyValidUntil: result.validUntil,
    };
  }

  get(siteId: string): Promise<SiteRecord | undefined> {
    return this.repo.get(siteId);
  }

  /** Like {@link get} but throws SITE_NOT_FOUND. */
  async require(siteId: string): Promise<SiteRecord> {
    const site = await this.repo.get(siteId);
    if (!site) throw new FedsslError('SITE_NOT_FOUND', `no site with id ${siteId}`, { siteId });
    return site;
  }

  /** All sites, oldest first. */
  list(): Promise<SiteRecord[]> {
    return this.repo.list();
  }

  /** Stores an agent's self-reported status (last seen, backend, example count, version). */
  async recordStatus(siteId: string, status: AgentStatus): Promise<void> {
    await this.repo.setStatus(siteId, {
      lastSeenAt: isoNow(this.clock),
      backend: status.backend,
      exampleCount: status.exampleCount,
      agentVersion: status.agentVersion,
    });
  }

  /** Updates only `lastSeenAt` (e.g. on an authenticated connection). */
  async recordSeen(siteId: string): Promise<void> {
    await this.repo.setStatus(siteId, { lastSeenAt: isoNow(this.clock) });
  }

  /**
   * Revokes a site: its key is refused from now on and its live connections are dropped
   * (via the presence `'revoked'` event). Revoking twice keeps the first revocation.
   * @throws FedsslError SITE_NOT_FOUND
   */
  async revoke(siteId: string, reason: string, actor: AuditActor = 'system'): Promise<SiteRecord> {
    const site = await this.db.transaction(async () => {
      const current = await this.require(siteId);
      if (current.status !== 'revoked') {
        await this.repo.setRevoked(siteId, reason, isoNow(this.clock));
        await this.audit.append(actor, 'site.revoked', siteId, { reason });
      }
      return this.require(siteId);
    });
    this.log.warn({ siteId, reason }, 'site revoked');
    this.presence.announceRevoked(siteId);
    return site;
  }
}
