import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import type { UpdateHeader } from '@fedssl/shared/protocol';

const dir = mkdtempSync(join(tmpdir(), 'fedssl-fault-hook-'));
const file = join(dir, 'fault.json');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
  rmSync(`${file}.fired`, { force: true });
});

/** The hook reads FEDSSL_FAULT_FILE once, at import: import it fresh with the variable set. */
async function armed() {
  vi.stubEnv('FEDSSL_FAULT_FILE', file);
  vi.resetModules();
  return {
    hook: await import('./fault-hook'),
    store: await import('../uploads/update-store'),
  };
}

describe('fault hook', () => {
  it('is inert without FEDSSL_FAULT_FILE, even with a fault file lying around', async () => {
    writeFileSync(file, JSON.stringify({ point: 'upload.chunk-write', action: 'enospc' }));
    vi.resetModules();
    const { faultPoint } = await import('./fault-hook');
    expect(() => faultPoint('upload.chunk-write')).not.toThrow();
    expect(existsSync(file)).toBe(true);
  });

  it('fires once, only at the armed point, run and round', async () => {
    rmSync(file, { force: true });
    const { hook } = await armed();
    expect(() => hook.faultPoint('upload.chunk-write')).not.toThrow(); // not armed yet
    writeFileSync(
      file,
      JSON.stringify({ point: 'upload.chunk-write', action: 'enospc', runId: 'r1', round: 2 }),
    );
    expect(() => hook.faultPoint('aggregation.before-publish', { runId: 'r1', round: 2 })).not.toThrow();
    expect(() => hook.faultPoint('upload.chunk-write', { runId: 'r1', round: 1 })).not.toThrow();
    expect(() => hook.faultPoint('upload.chunk-write', { runId: 'r2', round: 2 })).not.toThrow();
    expect(() => hook.faultPoint('upload.chunk-write', { runId: 'r1', round: 2 })).toThrow(
      expect.objectContaining({ code: 'ENOSPC' }),
    );
    expect(existsSync(file)).toBe(false);
    expect(existsSync(`${file}.fired`)).toBe(true);
    expect(() => hook.faultPoint('upload.chunk-write', { runId: 'r1', round: 2 })).not.toThrow();
  });

  it('an injected ENOSPC at a chunk write is STORAGE_FULL and leaves only whole chunks', async () => {
    const { store } = await armed();
    const updates = new store.UpdateStore(dir);
    const header = {
      runId: 'r1',
      round: 1,
      chunkCount: 2,
      chunkSize: 100,
      plaintextBytes: 150,
    } as UpdateHeader;
    const id = updates.uploadIdFor('task-1', 'sig');
    expect(updates.openPart(id, header)).toBe(0);
    updates.writeChunk(id, header, 0, new Uint8Array(116).fill(1));
    writeFileSync(file, JSON.stringify({ point: 'upload.chunk-write', action: 'enospc' }));
    expect(() => updates.writeChunk(id, header, 1, new Uint8Array(66).fill(2))).toThrow(
      expect.objectContaining({ code: 'STORAGE_FULL' }),
    );
    expect(statSync(updates.partPath(id)).size).toBe(116);
    updates.writeChunk(id, header, 1, new Uint8Array(66).fill(2)); // space is back
    expect(updates.openPart(id, header)).toBe(2);
  });
});
