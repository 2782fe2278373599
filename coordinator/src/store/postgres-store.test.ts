import { randomBytes } from 'node:crypto';
import { PostgresStore } from './postgres-store';
import { storeConformance } from './store.conformance';

/** The real PostgreSQL CI starts (trust auth); override with FEDSSL_TEST_DATABASE_URL. */
const URL = process.env['FEDSSL_TEST_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';

storeConformance(
  'PostgreSQL',
  async () => {
    try {
      return await PostgresStore.open({ url: URL, schema: `t_${randomBytes(6).toString('hex')}` });
    } catch (e) {
      throw new Error(
        `the PostgreSQL half of the store conformance suite needs a server at ${URL} ` +
          `(start it: pg_ctlcluster --skip-systemctl-redirect <version> main start): ${(e as Error).message}`,
      );
    }
  },
  async (s) => {
    await (s as PostgresStore).dropSchema();
    await s.close();
  },
);
