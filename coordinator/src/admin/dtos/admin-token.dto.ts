import { z } from 'zod';
import { ADMIN_ROLES } from '../admin-token.repository';

/** `POST /admin-tokens` body. */
export const createAdminTokenSchema = z
  .object({ name: z.string().min(1).max(128), role: z.enum(ADMIN_ROLES) })
  .strict();
export type CreateAdminTokenDto = z.output<typeof createAdminTokenSchema>;
