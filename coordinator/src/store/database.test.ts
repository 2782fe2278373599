import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Database } from './database';

describe('Database', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tempFile = () => {
    const d = mkdtempSync(join(tmpdir(), 'fedssl-db-'));
    dirs.push(d);
    return join(d, 'sub', 'fedssl.sqlite');
  };

  it('opens a file in WAL mode with foreign keys on', () => {
    const db = Database.open(tempFile());
    expect(db.sqlite.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.sqlite.pragma('foreign_keys', { simple: true })).toBe(1);
    db.close();
  });

  it('applies each migration exactly once, in order, across reopen', () => {
    const file = tempFile();
    const m1 = ['CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)', "INSERT INTO a (v) VALUES ('first')"];
    let db = Database.open(file);
    db.migrate('alpha', m1);
    db.migrate('alpha', m1); // second call is a no-op: the INSERT must not run again
    expect(db.appliedVersions('alpha')).toEqual([1, 2]);
    db.close();

    db = Database.open(file);
    db.migrate('alpha', [...m1, "INSERT INTO a (v) VALUES ('third')"]);
    expect(db.sqlite.prepare('SELECT v FROM a ORDER BY id').all()).toEqual([{ v: 'first' }, { v: 'third' }]);
    expect(db.appliedVersions('alpha')).toEqual([1, 2, 3]);
    db.close();
  });

  it('tracks components independently', () => {
    const db = Database.open(':memory:');
    db.migrate('alpha', ['CREATE TABLE a (id INTEGER)']);
    db.migrate('beta', ['CREATE TABLE b (id INTEGER)', 'CREATE TABLE b2 (id INTEGER)']);
    expect(db.appliedVersions('alpha')).toEqual([1]);
    expect(db.appliedVersions('beta')).toEqual([1, 2]);
    db.close();
  });

  it('rolls back a failing migration and records nothing for it', () => {
    const db = Database.open(':memory:');
    expect(() => db.migrate('x', ['CREATE TABLE t (id INTEGER); INSERT INTO nope VALUES (1)'])).toThrow();
    expect(db.appliedVersions('x')).toEqual([]);
    expect(db.sqlite.prepare("SELECT name FROM sqlite_master WHERE name = 't'").all()).toEqual([]);
    db.close();
  });

  it('transaction rolls back when fn throws and returns the value otherwise', () => {
    const db = Database.open(':memory:');
    db.migrate('t', ['CREATE TABLE t (id INTEGER)']);
    expect(() =>
      db.transaction(() => {
        db.sqlite.prepare('INSERT INTO t VALUES (1)').run();
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(db.transaction(() => db.sqlite.prepare('SELECT COUNT(*) AS n FROM t').get())).toEqual({ n: 0 });
    db.close();
  });

  it('enforces foreign keys', () => {
    const db = Database.open(':memory:');
    db.migrate('fk', [
      'CREATE TABLE p (id TEXT PRIMARY KEY)',
      'CREATE TABLE c (id TEXT PRIMARY KEY, p TEXT NOT NULL REFERENCES p(id))',
    ]);
    expect(() => db.sqlite.prepare("INSERT INTO c VALUES ('c1', 'missing')").run()).toThrow(/FOREIGN KEY/);
    db.close();
  });
});
