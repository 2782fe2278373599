import { z } from 'zod';
import type { SiteRecord } from '../site.repository';

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

/** A site as `GET /sites` returns it. */
export type SiteResponse = SiteRecord & { online: boolean };

/** Pure mapper from the registry record to the API shape. */
export function toSiteResponse(site: SiteRecord, online: boolean): SiteResponse {
  return { ...site, online };
}
