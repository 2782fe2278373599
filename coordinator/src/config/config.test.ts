import { describe, it, expect } from 'vitest';
import { resolve, join } from 'node:path';
import { FedsslError } from '@fedssl/shared/errors';
import { sqliteFileFor } from '../store/open-store';
import { loadConfig } from './config';

function errorOf(fn: () => unknown): FedsslError {
  try {
    fn();
  } catch (e) {
    if (e instanceof FedsslError) return e;
    throw e;
  }
  throw new Error('expected a FedsslError');
}

describe('loadConfig', () => {
  it('applies defaults', () => {
    const c = loadConfig({});
    expect(c).toEqual({
      host: '127.0.0.1',
      port: 8080,
      dataDir: resolve('./fedssl-data'),
      databaseUrl: null,
      logLevel: 'info',
      keyGraceSeconds: 86_400,
      retainVersions: 0,
      maxClockSkewSeconds: 600,
      ingestCacheMiB: 1024,
      rateLimits: {
        enroll: { count: 10, perSeconds: 60 },
        adminAuth: { count: 30, perSeconds: 60 },
        agentConnect: { count: 60, perSeconds: 60 },
        maxClients: 10_000,
      },
      trustProxyHops: 0,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads every variable', () => {
    const c = loadConfig({
      FEDSSL_HOST: '0.0.0.0',
      FEDSSL_PORT: '0',
      FEDSSL_DATA_DIR: '/var/lib/fedssl',
      FEDSSL_DATABASE_URL: 'sqlite:db.sqlite',
      FEDSSL_LOG_LEVEL: 'debug',
      FEDSSL_KEY_GRACE_SECONDS: '3600',
      FEDSSL_RETAIN_VERSIONS: '5',
      FEDSSL_MAX_CLOCK_SKEW_SECONDS: '120',
      FEDSSL_INGEST_CACHE_MB: '0',
      FEDSSL_RATE_LIMIT_ENROLL: '5/300',
      FEDSSL_RATE_LIMIT_ADMIN_AUTH: 'off',
      FEDSSL_RATE_LIMIT_AGENT_CONNECT: '100/10',
      FEDSSL_RATE_LIMIT_MAX_CLIENTS: '500',
      FEDSSL_TRUST_PROXY_HOPS: '1',
    });
    expect(c).toEqual({
      host: '0.0.0.0',
      port: 0,
      dataDir: '/var/lib/fedssl',
      databaseUrl: 'sqlite:db.sqlite',
      logLevel: 'debug',
      keyGraceSeconds: 3600,
      retainVersions: 5,
      maxClockSkewSeconds: 120,
      ingestCacheMiB: 0,
      rateLimits: {
        enroll: { count: 5, perSeconds: 300 },
        adminAuth: null,
        agentConnect: { count: 100, perSeconds: 10 },
        maxClients: 500,
      },
      trustProxyHops: 1,
    });
    expect(sqliteFileFor(c)).toBe('/var/lib/fedssl/db.sqlite');
    expect(sqliteFileFor({ ...c, databaseUrl: null })).toBe(join('/var/lib/fedssl', 'fedssl.sqlite'));
  });

  it('lists all invalid variables in one error', () => {
    const e = errorOf(() =>
      loadConfig({
        FEDSSL_PORT: 'abc',
        FEDSSL_LOG_LEVEL: 'loud',
        FEDSSL_DATABASE_URL: 'mysql://x',
        FEDSSL_HOST: 'a b',
      }),
    );
    expect(e.code).toBe('COORDINATOR_CONFIG_INVALID');
    expect(e.message).toBe(
      'invalid configuration: FEDSSL_HOST: expected a host name or address, got "a b"; ' +
        'FEDSSL_PORT: expected integer 0–65535, got "abc"; ' +
        'FEDSSL_DATABASE_URL: expected sqlite:<file> or postgres://…, got "mysql://x"; ' +
        'FEDSSL_LOG_LEVEL: expected one of fatal|error|warn|info|debug|trace|silent, got "loud"',
    );
    expect(e.details?.['problems']).toHaveLength(4);
  });

  it('rejects a retention count that is not a whole number', () => {
    expect(errorOf(() => loadConfig({ FEDSSL_RETAIN_VERSIONS: '-1' })).message).toBe(
      'invalid configuration: FEDSSL_RETAIN_VERSIONS: expected a whole number of versions to keep per run (0 = all), got "-1"',
    );
  });

  it('rejects an ingest cache size that is not whole MiB', () => {
    expect(errorOf(() => loadConfig({ FEDSSL_INGEST_CACHE_MB: '1.5G' })).message).toBe(
      'invalid configuration: FEDSSL_INGEST_CACHE_MB: expected whole MiB 0–9999999 (0 = keep no opened update), got "1.5G"',
    );
  });

  it('rejects rate limits that are not <count>/<seconds> or off, and a proxy hop count that is not a number', () => {
    const e = errorOf(() =>
      loadConfig({
        FEDSSL_RATE_LIMIT_ENROLL: '10 per minute',
        FEDSSL_RATE_LIMIT_AGENT_CONNECT: '0/60',
        FEDSSL_RATE_LIMIT_MAX_CLIENTS: '0',
        FEDSSL_TRUST_PROXY_HOPS: 'true',
      }),
    );
    expect(e.details?.['problems']).toEqual([
      'FEDSSL_RATE_LIMIT_ENROLL: expected <count>/<seconds> such as 10/60, or off; got "10 per minute"',
      'FEDSSL_RATE_LIMIT_AGENT_CONNECT: expected <count>/<seconds> such as 10/60, or off; got "0/60"',
      'FEDSSL_RATE_LIMIT_MAX_CLIENTS: expected a whole number of client addresses 1–9999999, got "0"',
      'FEDSSL_TRUST_PROXY_HOPS: expected the number of reverse proxies in front (0–99), got "true"',
    ]);
  });

  it('rejects a grace period that is not whole seconds', () => {
    expect(errorOf(() => loadConfig({ FEDSSL_KEY_GRACE_SECONDS: '1.5' })).message).toBe(
      'invalid configuration: FEDSSL_KEY_GRACE_SECONDS: expected whole seconds 0–999999999, got "1.5"',
    );
  });

  it('rejects out-of-range and non-integer ports', () => {
    expect(errorOf(() => loadConfig({ FEDSSL_PORT: '65536' })).message).toBe(
      'invalid configuration: FEDSSL_PORT: expected integer 0–65535, got "65536"',
    );
    expect(errorOf(() => loadConfig({ FEDSSL_PORT: '-1' })).message).toContain('got "-1"');
    expect(errorOf(() => loadConfig({ FEDSSL_PORT: '80.5' })).message).toContain('got "80.5"');
  });

  it('keeps a PostgreSQL URL for the PostgreSQL store (no SQLite file)', () => {
    const c = loadConfig({ FEDSSL_DATABASE_URL: 'postgres://u@h/db' });
    expect(c.databaseUrl).toBe('postgres://u@h/db');
    expect(sqliteFileFor(c)).toBeNull();
    expect(sqliteFileFor({ ...c, databaseUrl: 'postgresql://u@h/db?schema=x' })).toBeNull();
  });
});
