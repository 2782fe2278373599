import { createHash, randomBytes } from 'node:crypto';

/**
 * Bearer secrets (enrollment and admin tokens). They are shown once and only their SHA-256
 * is stored: 256 random bits need no slow hash, and a leaked database reveals no token.
 */
export function newSecretToken(prefix: string): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

/** Lower-case hex SHA-256 of the token's UTF-8 bytes, as stored and looked up. */
export function hashSecretToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A short random id for database rows, e.g. `site-1f3a…` (matches the protocol id pattern). */
export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(8).toString('hex')}`;
}
