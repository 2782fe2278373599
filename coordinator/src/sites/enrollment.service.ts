import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { fromBase64, keyId, toBase64 } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import {
  PROTOCOL_VERSION,
  enrollRequestSchema,
  type EnrollRequest,
  type EnrollResponse,
} from '@fedssl/shared/protocol';
import { LOGGER } from '../config/config';
import { CLOCK, type Clock } from '../config/clock';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { hashSecretToken, newId, newSecretToken } from '../keys/secret-token';
import { AuditLog, type AuditActor } from '../audit/audit-log';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { SiteRepository } from './site.repository';

/** What an admin gets back once, when issuing an enrollment token. */
export interface IssuedEnrollmentToken {
  token: string;
  siteId: string;
  siteName: string;
  expiresAt: string;
}

/** Where an issued token stands; `revoked` when its site was revoked before the token was used. */
export type EnrollmentTokenState = 'pending' | 'used' | 'expired' | 'revoked';

/** An issued token as the console lists it: never the secret nor its hash. */
export interface EnrollmentTokenSummary {
  siteId: string;
  siteName: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  state: EnrollmentTokenState;
}

/** Token prefix: lets secret scanners and humans recognise an enrollment token. */
export const ENROLLMENT_TOKEN_PREFIX = 'fse_';

/** Sites' one-time enrollment: admins issue tokens; agents redeem them with their public keys. */
@Injectable()
export class EnrollmentService {
  private readonly log: Logger;

  constructor(
    @Inject(SiteRepository) private readonly repo: SiteRepository,
    @Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService,
    @Inject(SQL_STORE) private readonly db: SqlStore,
    @Inject(AuditLog) private readonly audit: AuditLog,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'EnrollmentService' });
  }

  /**
   * Creates a `pending` site named `siteName` and a one-time token for it, valid for
   * `expiresInSeconds`. The token is returned once; only its hash is stored.
   * @throws FedsslError SITE_NAME_TAKEN
   */
  async issueToken(
    siteName: string,
    expiresInSeconds: number,
    actor: AuditActor = 'system',
  ): Promise<IssuedEnrollmentToken> {
    const now = new Date(this.clock.now());
    const token = newSecretToken(ENROLLMENT_TOKEN_PREFIX);
    const siteId = newId('site');
    const expiresAt = new Date(now.getTime() + expiresInSeconds * 1000).toISOString();
    await this.db.transaction(async () => {
      if (await this.repo.getByName(siteName)) {
        throw new FedsslError('SITE_NAME_TAKEN', `a site named "${siteName}" already exists`, { siteName });
      }
      await this.repo.insertPending(siteId, siteName, now.toISOString());
      await this.repo.insertToken({
        tokenHash: hashSecretToken(token),
        siteId,
        createdAt: now.toISOString(),
        expiresAt,
      });
      await this.audit.append(actor, 'enrollment-token.created', siteId, { siteName, expiresAt });
    });
    this.log.info({ siteId, siteName, expiresAt }, 'enrollment token issued');
    return { token, siteId, siteName, expiresAt };
  }

  /** Every issued token, newest first, with its state now. */
  async listTokens(): Promise<EnrollmentTokenSummary[]> {
    const now = this.clock.now();
    return (await this.repo.listAllTokens()).map((t) => ({
      siteId: t.siteId,
      siteName: t.siteName,
      createdAt: t.createdAt,
      expiresAt: t.expiresAt,
      usedAt: t.usedAt,
      state:
        t.usedAt !== null
          ? 'used'
          : t.siteStatus === 'revoked'
            ? 'revoked'
            : Date.parse(t.expiresAt) <= now
              ? 'expired'
              : 'pending',
    }));
  }

  /**
   * Expires the site's pending token now, so `POST /enroll` refuses it as expired.
   * @throws FedsslError ENROLLMENT_TOKEN_NOT_FOUND (no token for this site id),
   *   ENROLLMENT_TOKEN_NOT_PENDING (already used, expired or revoked)
   */
  async expireToken(siteId: string, actor: AuditActor = 'system'): Promise<EnrollmentTokenSummary> {
    const at = new Date(this.clock.now()).toISOString();
    await this.db.transaction(async () => {
      const tokens = await this.repo.listTokens(siteId);
      if (tokens.length === 0) {
        throw new FedsslError('ENROLLMENT_TOKEN_NOT_FOUND', `no enrollment token for site ${siteId}`, {
          siteId,
        });
      }
      const site = await this.repo.get(siteId);
      if (site?.status === 'revoked' || (await this.repo.expireTokens(siteId, at)) === 0) {
        throw new FedsslError(
          'ENROLLMENT_TOKEN_NOT_PENDING',
          `the enrollment token of site ${siteId} is already used, expired or revoked`,
          { siteId },
        );
      }
      await this.audit.append(actor, 'enrollment-token.expired', siteId, { siteName: site?.name ?? null });
    });
    this.log.info({ siteId }, 'enrollment token expired early');
    const summary = (await this.listTokens()).find((t) => t.siteId === siteId);
    // The row exists (checked above); listTokens reflects the new expiry.
    return summary!;
  }

  /**
   * Redeems an enrollment token: checks it (exists, unused, unexpired, site not revoked),
   * registers the site's public keys and returns the coordinator's keys for the agent to pin.
   * A request that fails any check consumes nothing.
   * @throws FedsslError PROTOCOL_INVALID_MESSAGE, PROTOCOL_VERSION_MISMATCH, ENROLLMENT_TOKEN_INVALID,
   *   ENROLLMENT_TOKEN_USED, ENROLLMENT_TOKEN_EXPIRED, SITE_REVOKED, ENROLLMENT_KEY_IN_USE, CRYPTO_INVALID_ARGUMENT
   */
  async enroll(request: EnrollRequest): Promise<EnrollResponse> {
    const parsed = enrollRequestSchema.safeParse(request);
    if (!parsed.success) {
      throw new FedsslError(
        'PROTOCOL_INVALID_MESSAGE',
        parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '),
      );
    }
    const req = parsed.data;
    if (req.protocolVersion !== PROTOCOL_VERSION) {
      throw new FedsslError(
        'PROTOCOL_VERSION_MISMATCH',
        `agent speaks protocol ${req.protocolVersion}, coordinator speaks ${PROTOCOL_VERSION}; upgrade the older side`,
      );
    }
    // Canonical base64 of exactly 32 bytes; re-encode so one key has one stored spelling.
    const signingPublicKey = toBase64(fromBase64(req.signingPublicKey, 32));
    const boxPublicKey = toBase64(fromBase64(req.boxPublicKey, 32));
    if (signingPublicKey === boxPublicKey) {
      throw new FedsslError(
        'CRYPTO_INVALID_ARGUMENT',
        'signingPublicKey and boxPublicKey must be different keys',
      );
    }
    const tokenHash = hashSecretToken(req.token);
    const now = new Date(this.clock.now());

    const site = await this.db.transaction(async () => {
      const token = await this.repo.getToken(tokenHash);
      if (!token)
        throw new FedsslError(
          'ENROLLMENT_TOKEN_INVALID',
          'enrollment token is not valid; ask the consortium admin for a new one',
        );
      if (token.usedAt !== null) {
        throw new FedsslError(
          'ENROLLMENT_TOKEN_USED',
          'enrollment token was already used; ask the consortium admin for a new one',
        );
      }
      if (Date.parse(token.expiresAt) <= now.getTime()) {
        throw new FedsslError(
          'ENROLLMENT_TOKEN_EXPIRED',
          `enrollment token expired at ${token.expiresAt}; ask the consortium admin for a new one`,
        );
      }
      const pending = await this.repo.get(token.siteId);
      if (!pending) throw new FedsslError('SITE_NOT_FOUND', `no site with id ${token.siteId}`);
      if (pending.status === 'revoked') {
        throw new FedsslError('SITE_REVOKED', `site ${pending.name} was revoked and cannot enroll`, {
          siteId: pending.id,
        });
      }
      const holder =
        (await this.repo.getBySigningKey(signingPublicKey))?.id ??
        (await this.repo.siteOfKey(signingPublicKey));
      if (holder !== undefined && holder !== pending.id) {
        throw new FedsslError(
          'ENROLLMENT_KEY_IN_USE',
          'this signing key is already registered to another site; generate new keys',
        );
      }
      if (!(await this.repo.markTokenUsed(tokenHash, now.toISOString()))) {
        throw new FedsslError(
          'ENROLLMENT_TOKEN_USED',
          'enrollment token was already used; ask the consortium admin for a new one',
        );
      }
      await this.repo.setEnrolled(
        pending.id,
        { signingPublicKey, boxPublicKey, agentVersion: req.agentVersion },
        now.toISOString(),
      );
      if ((await this.repo.siteOfKey(signingPublicKey)) === undefined) {
        await this.repo.insertKey({
          siteId: pending.id,
          keyId: keyId(fromBase64(signingPublicKey, 32)),
          signingPublicKey,
          boxPublicKey,
          createdAt: now.toISOString(),
        });
      }
      await this.audit.append(`site:${pending.id}`, 'site.enrolled', pending.id, {
        siteName: pending.name,
        agentVersion: req.agentVersion,
      });
      return pending;
    });
    this.log.info({ siteId: site.id, siteName: site.name, agentVersion: req.agentVersion }, 'site enrolled');
    return {
      siteId: site.id,
      siteName: site.name,
      coordinator: this.keys.publicKeys(),
      protocolVersion: PROTOCOL_VERSION,
    };
  }
}
