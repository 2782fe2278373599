import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { decodeLocalState, encodeLocalState, type LocalState } from '../train/local-state';
import { fileLocalStateStore } from './local-state-store';

const codec = { encode: encodeLocalState, decode: decodeLocalState };

/** A state whose one target weight tells which training produced it. */
const stateOf = (mark: number): LocalState => ({
  target: [{ name: 'encoder.w', shape: [1], data: Float32Array.of(mark) }],
  metadataHead: [],
  metadataClasses: 2,
});
const markOf = (s: LocalState | undefined) => s?.target[0]?.data[0];

function capture() {
  const lines: { level: number; msg: string; savedRound?: number }[] = [];
  const stream = { write: (l: string) => void lines.push(JSON.parse(l)) };
  return {
    logger: pino({ level: 'info' }, stream),
    warnings: () => lines.filter((l) => l.level === 40),
    lines,
  };
}

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fedssl-localstate-'));
  dirs.push(dir);
});

describe('fileLocalStateStore: rounds', () => {
  it('gives every attempt of a round the state from before it, and the next round the newest attempt', async () => {
    const { logger, warnings } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    expect(await store.load('run-1', 1)).toBeUndefined();
    await store.save('run-1', stateOf(1), 1);
    expect(markOf(await store.load('run-1', 2))).toBe(1);
    await store.save('run-1', stateOf(21), 2); // attempt 1 of round 2 (the round then fails)
    expect(markOf(await store.load('run-1', 2))).toBe(1); // attempt 2 starts where attempt 1 did
    await store.save('run-1', stateOf(22), 2);
    expect(markOf(await store.load('run-1', 2))).toBe(1); // and so would attempt 3
    expect(markOf(await store.load('run-1', 3))).toBe(22);
    await store.save('run-1', stateOf(3), 3);
    expect(markOf(await store.load('run-1', 4))).toBe(3);
    expect(markOf(await store.load('run-1', 3))).toBe(22);
    // Two files per run: the newest state and the one its round started from.
    expect((await readdir(dir)).sort()).toEqual(['run-1.r2.bin', 'run-1.r3.bin']);
    expect(warnings()).toEqual([]);
  });

  it('keeps both states across a restart (a new store on the same folder)', async () => {
    const { logger } = capture();
    const before = fileLocalStateStore(dir, codec, logger);
    await before.save('run-1', stateOf(1), 1);
    await before.save('run-1', stateOf(21), 2);
    const after = fileLocalStateStore(dir, codec, logger);
    expect(markOf(await after.load('run-1', 2))).toBe(1);
    expect(markOf(await after.load('run-1', 3))).toBe(21);
    expect(await after.load('run-2', 2)).toBeUndefined(); // runs do not share state
  });

  it('a retried first round starts fresh', async () => {
    const { logger } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    await store.save('run-1', stateOf(11), 1);
    expect(await store.load('run-1', 1)).toBeUndefined();
  });

  it('after missed rounds: continues from the newest earlier state, with a warning, for every attempt', async () => {
    const { logger, warnings } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    await store.save('run-1', stateOf(1), 1);
    expect(markOf(await store.load('run-1', 4))).toBe(1);
    expect(warnings()).toMatchObject([
      {
        savedRound: 1,
        msg: 'local state is from an earlier round than the previous one (site missed rounds): continuing from it',
      },
    ]);
    await store.save('run-1', stateOf(41), 4);
    expect(markOf(await store.load('run-1', 4))).toBe(1);
  });

  it('passes over states from later rounds (the run went back) and drops them at the next save', async () => {
    const { logger, warnings } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    await store.save('run-1', stateOf(2), 2);
    await store.save('run-1', stateOf(3), 3);
    expect(markOf(await store.load('run-1', 3))).toBe(2); // the state from before round 3 is kept
    expect(await store.load('run-1', 1)).toBeUndefined(); // nothing from before round 1
    expect(warnings()).toMatchObject([
      { savedRound: 3, msg: 'local state from a later round ignored: the run went back' },
    ]);
    await store.save('run-1', stateOf(11), 1);
    expect(await readdir(dir)).toEqual(['run-1.r1.bin']);
    expect(markOf(await store.load('run-1', 2))).toBe(11);
  });

  it('does not mistake another run whose id extends this one for its rounds', async () => {
    const { logger } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    await store.save('a.r5', stateOf(7), 3);
    expect(await store.load('a', 4)).toBeUndefined();
    await store.save('a', stateOf(1), 1);
    await store.save('a', stateOf(2), 2);
    await store.save('a', stateOf(3), 3);
    expect(markOf(await store.load('a.r5', 4))).toBe(7);
  });

  it('an unreadable state is logged and the round starts fresh', async () => {
    const { logger, warnings } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    await writeFile(join(dir, 'run-1.r1.bin'), 'not a state');
    expect(await store.load('run-1', 2)).toBeUndefined();
    expect(warnings()).toMatchObject([{ msg: 'local state unreadable, starting this run fresh' }]);
  });
});

describe('fileLocalStateStore: files of earlier agents (no round)', () => {
  it('takes an untagged state as the state before the next round, also for its retry, until a later round supersedes it', async () => {
    const { logger, warnings } = capture();
    await writeFile(join(dir, 'run-1.bin'), encodeLocalState(stateOf(4))); // as the old store wrote it
    const store = fileLocalStateStore(dir, codec, logger);
    expect(markOf(await store.load('run-1', 5))).toBe(4);
    expect(warnings()).toMatchObject([
      { msg: 'local state without its round: taken as the state before this round' },
    ]);
    await store.save('run-1', stateOf(51), 5);
    expect(markOf(await store.load('run-1', 5))).toBe(4); // a retry of round 5 too
    expect(markOf(await store.load('run-1', 6))).toBe(51);
    await store.save('run-1', stateOf(6), 6);
    expect((await readdir(dir)).sort()).toEqual(['run-1.r5.bin', 'run-1.r6.bin']);
    expect(markOf(await store.load('run-1', 6))).toBe(51);
  });

  it('without a round: saves untagged (replacing tagged states) and loads the newest', async () => {
    const { logger } = capture();
    const store = fileLocalStateStore(dir, codec, logger);
    expect(await store.load('run-1')).toBeUndefined();
    await store.save('run-1', stateOf(1), 1);
    await store.save('run-1', stateOf(2), 2);
    expect(markOf(await store.load('run-1'))).toBe(2);
    await store.save('run-1', stateOf(9));
    expect(await readdir(dir)).toEqual(['run-1.bin']);
    expect(markOf(await store.load('run-1'))).toBe(9);
  });
});
