import { z } from 'zod';
import { ADMIN_ROLES } from '../admin-token.repository';

/** `POST /admin-tokens` body. */
export const createAdminTokenSchema = z
  .object({
    name: z.string().min(1).max(128),
    role: z.enum(ADMIN_ROLES),
    /** Valid for this many seconds (at most ten years); or */
    expiresInSeconds: z
      .number()
      .int()
      .min(60)
      .max(10 * 365 * 86_400)
      .optional(),
    /** valid until this instant. Neither: the token never expires. */
    expiresAt: z.iso.datetime({ offset: true }).optional(),
  })
  .strict()
  .refine((b) => b.expiresInSeconds === undefined || b.expiresAt === undefined, {
    message: 'give expiresInSeconds or expiresAt, not both',
  });
export type CreateAdminTokenDto = z.output<typeof createAdminTokenSchema>;
