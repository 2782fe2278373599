import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../store/postgres-store';
import type { SqlStore } from '../store/sql-store';
import { SqliteStore } from '../store/sqlite-store';
import { ModelMarksRepository } from './model-marks.repository';

/** The real PostgreSQL the store conformance suite uses (override with FEDSSL_TEST_DATABASE_URL). */
const PG_URL = process.env['FEDSSL_TEST_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';

/** One behaviour on both back ends (the store conformance pattern). */
function marksConformance(
  name: string,
  open: () => Promise<SqlStore>,
  dispose: (s: SqlStore) => Promise<void>,
) {
  describe(`model marks: ${name}`, () => {
    let db: SqlStore;
    let marks: ModelMarksRepository;
    beforeAll(async () => {
      db = await open();
      marks = await new ModelMarksRepository(db).init();
    });
    afterAll(async () => {
      if (db) await dispose(db);
    });

    it('migrates once', async () => {
      await new ModelMarksRepository(db).init();
      expect(await db.appliedVersions('models')).toEqual([1]);
    });

    it('sets and clears keep, and records a prune once', async () => {
      expect(await marks.get('r.r1')).toBeUndefined();
      await marks.setKeep('r.r1', true, 'admin:a', '2026-01-01T00:00:00.000Z');
      expect(await marks.get('r.r1')).toEqual({
        version: 'r.r1',
        keep: true,
        keptBy: 'admin:a',
        keptAt: '2026-01-01T00:00:00.000Z',
        prunedAt: null,
        prunedBy: null,
        bytesFreed: null,
      });
      await marks.setKeep('r.r1', false, 'admin:b', '2026-01-02T00:00:00.000Z');
      expect(await marks.get('r.r1')).toMatchObject({ keep: false, keptBy: 'admin:b' });

      expect(await marks.markPruned('r.r0', 'system', '2026-01-03T00:00:00.000Z', 1234)).toBe(true);
      expect(await marks.markPruned('r.r0', 'admin:a', '2026-01-04T00:00:00.000Z', 0)).toBe(false);
      expect(await marks.markPruned('r.r1', 'system', '2026-01-05T00:00:00.000Z', 5)).toBe(true);
      expect(await marks.list()).toEqual([
        {
          version: 'r.r0',
          keep: false,
          keptBy: null,
          keptAt: null,
          prunedAt: '2026-01-03T00:00:00.000Z',
          prunedBy: 'system',
          bytesFreed: 1234,
        },
        {
          version: 'r.r1',
          keep: false,
          keptBy: 'admin:b',
          keptAt: '2026-01-02T00:00:00.000Z',
          prunedAt: '2026-01-05T00:00:00.000Z',
          prunedBy: 'system',
          bytesFreed: 5,
        },
      ]);
    });

    it('a mark rolls back with its transaction', async () => {
      await expect(
        db.transaction(async () => {
          await marks.setKeep('r.r9', true, 'admin:a', '2026-01-01T00:00:00.000Z');
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(await marks.get('r.r9')).toBeUndefined();
    });
  });
}

marksConformance(
  'SQLite',
  async () => SqliteStore.open(join(mkdtempSync(join(tmpdir(), 'fedssl-marks-')), 'fedssl.sqlite')),
  async (s) => {
    const file = (s as SqliteStore).sqlite.name;
    await s.close();
    rmSync(join(file, '..'), { recursive: true, force: true });
  },
);

marksConformance(
  'PostgreSQL',
  () => PostgresStore.open({ url: PG_URL, schema: `t_${randomBytes(6).toString('hex')}` }),
  async (s) => {
    await (s as PostgresStore).dropSchema();
    await s.close();
  },
);
