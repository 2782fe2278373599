import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';

/**
 * Test support: the FedsslError code a call throws. Anything that is not a FedsslError is
 * rethrown, so an unexpected crash fails the test with its own message instead of a wrong code.
 */

const NO_ERROR = 'no error';

function codeFrom(e: unknown): string {
  if (isFedsslErrorLike(e)) return e.code;
  throw e;
}

/**
 * The code of the FedsslError `fn` throws or rejects with, or `'no error'`.
 * @example expect(await codeOf(() => enrollment.enroll(req))).toBe('ENROLLMENT_TOKEN_USED');
 */
export async function codeOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (e) {
    return codeFrom(e);
  }
  return NO_ERROR;
}

/** {@link codeOf} for a synchronous call. */
export function codeOfSync(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return codeFrom(e);
  }
  return NO_ERROR;
}
