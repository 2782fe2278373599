import { z } from 'zod';
import {
  coordinatorKeysSchema,
  enrollResponseSchema,
  siteKeyRotationResponseSchema,
} from '@fedssl/shared/protocol';

/*
 * The coordinator's REST answers the agent's commands read (enroll, keys rotate, doctor), checked
 * for the fields they use. Fields a later coordinator release adds are dropped (z.object strips
 * unknown keys), so an agent installed at a site keeps enrolling against an upgraded
 * coordinator — a strict parse would refuse the answer after the one-time token was spent.
 * What is pinned keeps exactly the fields of `coordinatorKeysSchema`.
 */

/** `GET /api/v1/coordinator/keys`. */
export const coordinatorKeysAnswer = z.object(coordinatorKeysSchema.shape);

/** `POST /api/v1/enroll`. */
export const enrollAnswer = z.object({ ...enrollResponseSchema.shape, coordinator: coordinatorKeysAnswer });

/** `POST /api/v1/sites/:id/keys/rotate`. */
export const keyRotationAnswer = z.object(siteKeyRotationResponseSchema.shape);

/** The first problems of a failed parse, `path: message`, for an error that names the field. */
export function answerIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.map(String).join('.') || '(body)'}: ${i.message}`)
    .join('; ');
}
