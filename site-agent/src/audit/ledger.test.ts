import { appendFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentPaths } from '../config/agent-config';
import { appendLedger, readLedger, type LedgerEntry } from './ledger';

const dirs: string[] = [];
async function home(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'fedssl-ledger-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const upload: LedgerEntry = {
  kind: 'upload',
  time: '2025-01-02T03:04:05.000Z',
  runId: 'run-1',
  round: 2,
  taskId: 'task-9',
  modelVersion: 'v2',
  bytesSent: 12345,
  plaintextSha256: 'a'.repeat(64),
  ciphertextSha512: 'b'.repeat(128),
  tensors: ['encoder.conv1.weight', 'projector.0.weight'],
  exampleCount: 40,
  accepted: true,
  updateId: 'upd-1',
};
const download: LedgerEntry = {
  kind: 'download',
  time: '2025-01-02T03:00:00.000Z',
  runId: 'run-1',
  round: 2,
  taskId: 'task-9',
  modelVersion: 'v2',
  modelSha256: 'c'.repeat(64),
  bytes: 999,
  verified: true,
};

describe('ledger', () => {
  it('is empty before anything happened', async () => {
    expect(await readLedger(await home())).toEqual([]);
  });

  it('appends JSON lines (0600) and reads them back in order', async () => {
    const h = await home();
    await appendLedger(h, download);
    await appendLedger(h, upload);
    const rejected: LedgerEntry = {
      ...upload,
      taskId: 'task-10',
      accepted: false,
      updateId: undefined,
      error: { code: 'UPDATE_NORM_TOO_LARGE', message: 'too big' },
    };
    delete (rejected as { updateId?: string }).updateId;
    await appendLedger(h, rejected);
    expect(await readLedger(h)).toEqual([download, upload, rejected]);
    const p = agentPaths(h).ledger;
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    expect((await readFile(p, 'utf8')).trimEnd().split('\n')).toHaveLength(3);
  });

  it('ignores a torn last line but rejects a corrupt line in the middle', async () => {
    const h = await home();
    await appendLedger(h, upload);
    await appendFile(agentPaths(h).ledger, '{"kind":"upl');
    expect(await readLedger(h)).toEqual([upload]);
    await appendFile(agentPaths(h).ledger, '\n');
    await appendLedger(h, download);
    await expect(readLedger(h)).rejects.toThrow('ledger.jsonl line 2 is not valid JSON');
  });

  it('refuses entries that do not match the schema', async () => {
    const h = await home();
    await expect(appendLedger(h, { ...upload, bytesSent: -1 })).rejects.toMatchObject({
      code: 'AGENT_CONFIG_INVALID',
    });
    await expect(
      appendLedger(h, { ...upload, patientId: 'x' } as unknown as LedgerEntry),
    ).rejects.toMatchObject({ code: 'AGENT_CONFIG_INVALID' });
    expect(await readLedger(h)).toEqual([]);
  });
});
