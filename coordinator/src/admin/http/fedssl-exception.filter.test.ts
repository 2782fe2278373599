import { describe, it, expect } from 'vitest';
import { FedsslError } from '@fedssl/shared/errors';
import { httpStatusFor, isFedsslErrorLike } from './fedssl-exception.filter';

describe('httpStatusFor', () => {
  it.each([
    ['SITE_NOT_FOUND', 404],
    ['RUN_NOT_FOUND', 404],
    ['MODEL_VERSION_NOT_FOUND', 404],
    ['ADMIN_UNAUTHORIZED', 401],
    ['ADMIN_FORBIDDEN', 403],
    ['ADMIN_TOKEN_EXPIRED', 401],
    ['PROTOCOL_INVALID_MESSAGE', 400],
    ['RUN_CONFIG_INVALID', 400],
    ['COORDINATOR_CONFIG_INVALID', 400],
    ['ENROLLMENT_TOKEN_INVALID', 400],
    ['ENROLLMENT_TOKEN_USED', 409],
    ['ENROLLMENT_TOKEN_EXPIRED', 410],
    ['SITE_REVOKED', 403],
    ['RUN_INVALID_STATE', 409],
    ['MODEL_CHUNK_OUT_OF_RANGE', 416],
    ['MODEL_WEIGHTS_MISMATCH', 400],
    ['TRAINING_FAILED', 500],
    ['STORAGE_FULL', 507],
  ] as const)('%s → %i', (code, status) => {
    expect(httpStatusFor(code)).toBe(status);
  });
});

describe('isFedsslErrorLike', () => {
  it('recognises FedsslErrors, including look-alikes from a second module copy, and nothing else', () => {
    expect(isFedsslErrorLike(new FedsslError('SITE_NOT_FOUND', 'x'))).toBe(true);
    const copy = Object.assign(new Error('x'), { name: 'FedsslError', code: 'SITE_NOT_FOUND' });
    expect(isFedsslErrorLike(copy)).toBe(true);
    expect(isFedsslErrorLike(Object.assign(new Error('x'), { name: 'FedsslError', code: 'MADE_UP' }))).toBe(
      false,
    );
    expect(isFedsslErrorLike({ name: 'FedsslError', code: 'SITE_NOT_FOUND' })).toBe(false);
    expect(isFedsslErrorLike(new Error('plain'))).toBe(false);
  });
});
