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

/** When a new token stops working: never (neither given), after a duration, or at an instant. */
export interface AdminTokenExpiry {
  expiresInSeconds?: number;
  /** ISO-8601 instant, in the future. */
  expiresAt?: string;
}

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

  /**
   * Creates a token; the secret is returned once and never stored.
   * @throws FedsslError PROTOCOL_INVALID_MESSAGE when both expiry forms are given or `expiresAt` is not in the future.
   */
  async create(
    name: string,
    role: AdminRole,
    actor: AuditActor = 'system',
    expiry: AdminTokenExpiry = {},
  ): Promise<AdminTokenRecord & { token: string }> {
    const expiresAt = this.expiryOf(expiry);
    const token = newSecretToken(ADMIN_TOKEN_PREFIX);
    const id = newId('adm');
    const rec = await this.db.transaction(async () => {
      await this.repo.insert({
        id,
        name,
        role,
        tokenHash: hashSecretToken(token),
        createdAt: isoNow(this.clock),
        expiresAt,
      });
      await this.audit.append(actor, 'admin-token.created', id, { name, role, expiresAt });
      return (await this.repo.get(id)) as AdminTokenRecord;
    });
    this.log.info({ tokenId: id, name, role, expiresAt }, 'admin token created');
    return { ...rec, token };
  }

  private expiryOf({ expiresInSeconds, expiresAt }: AdminTokenExpiry): string | null {
    if (expiresInSeconds !== undefined && expiresAt !== undefined)
      throw new FedsslError('PROTOCOL_INVALID_MESSAGE', 'give expiresInSeconds or expiresAt, not both');
    if (expiresInSeconds !== undefined)
      return new Date(this.clock.now() + expiresInSeconds * 1000).toISOString();
    if (expiresAt === undefined) return null;
    const at = Date.parse(expiresAt);
    if (!(at > this.clock.now()))
      throw new FedsslError('PROTOCOL_INVALID_MESSAGE', `expiresAt ${expiresAt} is not in the future`);
    return new Date(at).toISOString();
  }

  list(): Promise<AdminTokenRecord[]> {
    return this.repo.list();
  }

  /** @throws FedsslError ADMIN_TOKEN_NOT_FOUND */
  async get(id: string): Promise<AdminTokenRecord> {
    const rec = await this.repo.get(id);
    if (!rec) throw new FedsslError('ADMIN_TOKEN_NOT_FOUND', `no admin token with id ${id}`);
    return rec;
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
   * @throws FedsslError ADMIN_UNAUTHORIZED for unknown or revoked tokens (one message for both);
   *   ADMIN_TOKEN_EXPIRED past its expiry (only the holder of the secret learns that).
   */
  async authenticate(token: string): Promise<AdminPrincipal> {
    const rec = await this.repo.getByHash(hashSecretToken(token));
    if (!rec || rec.revokedAt !== null) {
      throw new FedsslError('ADMIN_UNAUTHORIZED', 'invalid or revoked admin token');
    }
    if (rec.expiresAt !== null && Date.parse(rec.expiresAt) <= this.clock.now()) {
      throw new FedsslError(
        'ADMIN_TOKEN_EXPIRED',
        `admin token ${rec.id} expired at ${rec.expiresAt}; ask an admin for a new one`,
      );
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
