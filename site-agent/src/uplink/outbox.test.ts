import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { generatePartyKeys, sealUpdate, toBase64 } from '@fedssl/shared/crypto';
import { PROTOCOL_VERSION } from '@fedssl/shared/protocol';
import { decodeOutboxEntry, encodeOutboxEntry, fileOutbox, type OutboxEntry } from './outbox';

const logger = pino({ level: 'silent' });
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function entry(taskId: string, deadline: string): OutboxEntry {
  const site = generatePartyKeys();
  const coord = generatePartyKeys();
  const plaintext = new Uint8Array(10_000).map((_, i) => i % 251);
  const sealed = sealUpdate({
    plaintext,
    fields: {
      protocolVersion: PROTOCOL_VERSION,
      siteId: 'site-a',
      runId: 'run-1',
      round: 2,
      taskId,
      taskNonce: toBase64(new Uint8Array(32).fill(1)),
      baseModelHash: 'a'.repeat(64),
      exampleCount: 7,
      metrics: { loss: 0.5 },
      createdAt: new Date().toISOString(),
    },
    chunkSize: 4096,
    siteSigningSecretKey: site.signing.secretKey,
    coordinatorBoxPublicKey: coord.box.publicKey,
  });
  return {
    taskId,
    runId: 'run-1',
    round: 2,
    modelVersion: 'run-1.r1',
    deadline,
    sealed,
    facts: {
      plaintextSha256: 'b'.repeat(64),
      ciphertextSha512: sealed.header.ciphertextSha512,
      tensors: ['encoder.conv1.weight'],
      exampleCount: 7,
      bytes: 123,
    },
    localState: {
      target: [{ name: 'encoder.conv1.weight', shape: [2], data: Float32Array.from([1, 2]) }],
      metadataHead: [{ name: 'metadata_head.fc.weight', shape: [1], data: Float32Array.from([3]) }],
      metadataClasses: 4,
    },
  };
}

const future = () => new Date(Date.now() + 3_600_000).toISOString();

describe('outbox', () => {
  it('round-trips an entry byte for byte, local state included', () => {
    const e = entry('task-1', future());
    const back = decodeOutboxEntry(encodeOutboxEntry(e));
    expect(back.sealed.header).toEqual(e.sealed.header);
    expect(back.sealed.signature).toBe(e.sealed.signature);
    expect(back.sealed.chunks.map((c) => Buffer.from(c).toString('hex'))).toEqual(
      e.sealed.chunks.map((c) => Buffer.from(c).toString('hex')),
    );
    expect(back.sealed.chunks.length).toBe(3);
    expect(back.facts).toEqual(e.facts);
    expect(back.localState?.metadataClasses).toBe(4);
    expect(Array.from(back.localState!.target[0]!.data)).toEqual([1, 2]);
    expect(back.deadline).toBe(e.deadline);
  });

  it('stores entries as private files, replaced atomically, and removes them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fedssl-outbox-'));
    dirs.push(dir);
    const outbox = fileOutbox(join(dir, 'outbox'), logger);
    expect(await outbox.get('task-1')).toBeUndefined();
    await outbox.put(entry('task-1', future()));
    const second = entry('task-1', future());
    await outbox.put(second);
    expect((await stat(join(dir, 'outbox', 'task-1.outbox'))).mode & 0o777).toBe(0o600);
    expect((await outbox.get('task-1'))?.sealed.signature).toBe(second.sealed.signature);
    expect(await readdir(join(dir, 'outbox'))).toEqual(['task-1.outbox']);
    await outbox.remove('task-1');
    expect(await outbox.get('task-1')).toBeUndefined();
    await expect(outbox.put({ ...entry('task-x', future()), taskId: '../escape' })).rejects.toMatchObject({
      code: 'UPLOAD_FAILED',
    });
  });

  it('drops a damaged entry (one flipped bit) instead of uploading it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fedssl-outbox-'));
    dirs.push(dir);
    const outbox = fileOutbox(dir, logger);
    await outbox.put(entry('task-1', future()));
    const file = join(dir, 'task-1.outbox');
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x04;
    await writeFile(file, bytes);
    expect(() => decodeOutboxEntry(new Uint8Array(bytes))).toThrow(/hash mismatch/);
    expect(await outbox.get('task-1')).toBeUndefined();
    expect(await readdir(dir)).toEqual([]);
  });

  it('prunes entries past their task deadline and keeps the others', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fedssl-outbox-'));
    dirs.push(dir);
    const outbox = fileOutbox(dir, logger);
    await outbox.put(entry('task-old', new Date(Date.now() - 1000).toISOString()));
    await outbox.put(entry('task-new', future()));
    expect(await outbox.prune(Date.now())).toEqual(['task-old']);
    expect(await readdir(dir)).toEqual(['task-new.outbox']);
    expect(await fileOutbox(join(dir, 'missing'), logger).prune(Date.now())).toEqual([]);
  });
});
