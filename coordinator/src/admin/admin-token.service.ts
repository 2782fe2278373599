import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import { LOGGER } from '../config/config';
import { CLOCK, isoNow, type Clock } from '../config/clock';
import { hashSecretToken, newId, newSecretToken } from '../keys/secret-token';
import { AuditLog, type AuditActor } from '../audit/audit-log';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { AdminTokenRepository, type AdminRole, type AdminTokenRecord } from './admin-token.repository';

/** Token prefix, so scanners and humans recognise an admin token. */
export const ADMIN_TOKEN_PREFIX = 'fsa_';

/** Who is calling the admin API (attached to the request by the guard). */
export interface AdminPrincipal {
  tokenId: string;
  name: string;
  role: AdminRole;
}

/** Issues, lists, revokes and checks admin bearer tokens (stored as SHA-256 hashes). */
@Injectable()
export class AdminTokenService {
  private readonly log: Logger;

  constructor(
    @Inject(AdminTokenRepository) private readonly repo: AdminTokenRepository,
    @Inject(AuditLog) private readonly audit: AuditLog,
    @Inject(SQL_STORE) private readonly db: SqlStore,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'AdminTokenService' });
  }

  /** Creates a token; the secret is returned once and never stored. */
  async create(
    name: string,
    role: AdminRole,
    actor: AuditActor = 'system',
  ): Promise<AdminTokenRecord & { token: string }> {
    const token = newSecretToken(ADMIN_TOKEN_PREFIX);
    const id = newId('adm');
    const rec = await this.db.transaction(async () => {
      await this.repo.insert({
        id,
        name,
        role,
        tokenHash: hashSecretToken(token),
        createdAt: isoNow(this.clock),
      });
      await this.audit.append(actor, 'admin-token.created', id, { name, role });
      return (await this.repo.get(id)) as AdminTokenRecord;
    });
    this.log.info({ tokenId: id, name, role }, 'admin token created');
    return { ...rec, token };
  }

  list(): Promise<AdminTokenRecord[]> {
    return this.repo.list();
  }

  /** @throws FedsslError ADMIN_TOKEN_NOT_FOUND */
  async revoke(id: string, actor: AuditActor = 'system'): Promise<AdminTokenRecord> {
    const rec = await this.db.transaction(async () => {
      if (!(await this.repo.get(id)))
        throw new FedsslError('ADMIN_TOKEN_NOT_FOUND', `no admin token with id ${id}`);
      if (await this.repo.revoke(id, isoNow(this.clock))) {
        await this.audit.append(actor, 'admin-token.revoked', id, {});
      }
      return (await this.repo.get(id)) as AdminTokenRecord;
    });
    this.log.warn({ tokenId: id }, 'admin token revoked');
    return rec;
  }

  /**
   * The principal for a presented bearer token.
   * @throws FedsslError ADMIN_UNAUTHORIZED for unknown or revoked tokens (one message for both).
   */
  async authenticate(token: string): Promise<AdminPrincipal> {
    const rec = await this.repo.getByHash(hashSecretToken(token));
    if (!rec || rec.revokedAt !== null) {
      throw new FedsslError('ADMIN_UNAUTHORIZED', 'invalid or revoked admin token');
    }
    // Best effort: a store that cannot write (a full disk) must not lock the operators out.
    await this.repo
      .touch(rec.id, isoNow(this.clock))
      .catch((e: unknown) =>
        this.log.warn({ tokenId: rec.id, err: (e as Error).message }, 'could not record token use'),
      );
    return { tokenId: rec.id, name: rec.name, role: rec.role };
  }
}
