import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { UpdateHeader } from '@fedssl/shared/protocol';
import { isOutOfSpace, whenOutOfSpace } from '../faults/storage-full';
import { chunkCiphertextLength, UpdateStore } from './update-store';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

// Only the envelope geometry matters to the part file: 3 chunks of 100 + 16, the last 50 + 16.
const header = { chunkCount: 3, chunkSize: 100, plaintextBytes: 250 } as UpdateHeader;
const chunk = (i: number) => new Uint8Array(chunkCiphertextLength(header, i)).fill(i + 1);

describe('UpdateStore part files', () => {
  it('names an upload by task and signature, so the same envelope always finds the same part file', () => {
    const store = new UpdateStore('/nowhere');
    expect(store.uploadIdFor('task-1', 'sig-a')).toBe(store.uploadIdFor('task-1', 'sig-a'));
    expect(store.uploadIdFor('task-1', 'sig-a')).toMatch(/^up-[0-9a-f]{32}$/);
    expect(store.uploadIdFor('task-1', 'sig-b')).not.toBe(store.uploadIdFor('task-1', 'sig-a'));
    expect(store.uploadIdFor('task-2', 'sig-a')).not.toBe(store.uploadIdFor('task-1', 'sig-a'));
  });

  it('resumes after a restart from the last whole chunk on disk, cutting a torn tail', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedssl-parts-'));
    dirs.push(dir);
    const before = new UpdateStore(dir);
    const id = before.uploadIdFor('task-1', 'sig');
    expect(before.openPart(id, header)).toBe(0);
    before.writeChunk(id, header, 0, chunk(0));
    before.writeChunk(id, header, 1, chunk(1));
    // The process dies while writing chunk 2: part of it reached the file.
    appendFileSync(before.partPath(id), chunk(2).subarray(0, 20));

    const after = new UpdateStore(dir); // a new coordinator process
    expect(after.openPart(id, header)).toBe(2);
    expect(statSync(after.partPath(id)).size).toBe(232);
    after.writeChunk(id, header, 2, chunk(2));
    const bytes = readFileSync(after.partPath(id));
    expect(bytes.length).toBe(232 + 66);
    expect([bytes[0], bytes[116], bytes[232], bytes[297]]).toEqual([1, 2, 3, 3]);
    expect(after.openPart(id, header)).toBe(3);
  });
});

describe('out of space', () => {
  it('turns ENOSPC, EDQUOT, SQLITE_FULL and PostgreSQL 53100 into STORAGE_FULL and lets other errors through', () => {
    for (const code of ['ENOSPC', 'EDQUOT', 'SQLITE_FULL', '53100']) {
      const e = Object.assign(new Error('full'), { code });
      expect(isOutOfSpace(e)).toBe(true);
      expect(() =>
        whenOutOfSpace('an upload chunk', () => {
          throw e;
        }),
      ).toThrow(
        expect.objectContaining({
          code: 'STORAGE_FULL',
          message:
            'coordinator out of space writing an upload chunk; free space in FEDSSL_DATA_DIR (or the database volume), nothing accepted was lost',
          details: { cause: code },
        }),
      );
    }
    const other = Object.assign(new Error('denied'), { code: 'EACCES' });
    expect(isOutOfSpace(other)).toBe(false);
    expect(() =>
      whenOutOfSpace('x', () => {
        throw other;
      }),
    ).toThrow(other);
    expect(whenOutOfSpace('x', () => 42)).toBe(42);
  });
});
