import { z } from 'zod';
import { siteKeyStatus, type SiteKeyStatus } from '../site-keys';
import type { SiteKeyRecord, SiteRecord } from '../site.repository';

/** `POST /enrollment-tokens` body. */
export const createEnrollmentTokenSchema = z
  .object({
    siteName: z
      .string()
      .min(1)
      .max(128)
      .regex(/^\P{Cc}*$/u, 'expected printable characters'),
    expiresInSeconds: z
      .number()
      .int()
      .min(60)
      .max(30 * 24 * 3600)
      .default(86_400),
  })
  .strict();
export type CreateEnrollmentTokenDto = z.output<typeof createEnrollmentTokenSchema>;

/** `POST /sites/:id/revoke` body. */
export const revokeSiteSchema = z.object({ reason: z.string().min(1).max(500) }).strict();
export type RevokeSiteDto = z.output<typeof revokeSiteSchema>;

/** One site key as the API lists it: its life-cycle status at the time of the request. */
export type SiteKeyResponse = SiteKeyRecord & { status: SiteKeyStatus };

/** A site as `GET /sites` returns it. */
export type SiteResponse = Omit<SiteRecord, 'keys'> & { online: boolean; keys: SiteKeyResponse[] };

/** Pure mapper from the registry record to the API shape (`nowMs` decides each key's status). */
export function toSiteResponse(site: SiteRecord, online: boolean, nowMs: number): SiteResponse {
  return { ...site, online, keys: site.keys.map((k) => ({ ...k, status: siteKeyStatus(k, nowMs) })) };
}
