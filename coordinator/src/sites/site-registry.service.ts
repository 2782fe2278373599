import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import type { AgentStatus } from '@fedssl/shared/protocol';
import { LOGGER } from '../config/config';
import { CLOCK, isoNow, type Clock } from '../config/clock';
import { AuditLog, type AuditActor } from '../audit/audit-log';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { PresenceService } from './presence.service';
import { SiteRepository, type SiteRecord } from './site.repository';

export type { SiteRecord } from './site.repository';

/** The registry of sites: lookup, status reports from agents, revocation. */
@Injectable()
export class SiteRegistryService {
  private readonly log: Logger;

  constructor(
    @Inject(SiteRepository) private readonly repo: SiteRepository,
    @Inject(PresenceService) private readonly presence: PresenceService,
    @Inject(SQL_STORE) private readonly db: SqlStore,
    @Inject(AuditLog) private readonly audit: AuditLog,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'SiteRegistryService' });
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
