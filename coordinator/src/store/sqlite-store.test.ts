import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from './sqlite-store';
import { storeConformance } from './store.conformance';

storeConformance(
  'SQLite',
  async () => SqliteStore.open(join(mkdtempSync(join(tmpdir(), 'fedssl-store-')), 'fedssl.sqlite')),
  async (s) => {
    const file = (s as SqliteStore).sqlite.name;
    await s.close();
    rmSync(join(file, '..'), { recursive: true, force: true });
  },
);
