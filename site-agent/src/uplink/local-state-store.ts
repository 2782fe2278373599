import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeSecureFile } from '../config/secure-files';
import type { LocalState } from '../train/local-state';

/**
 * Where a site keeps its per-run local state (BYOL target network, metadata head) between
 * rounds. It never leaves the site.
 *
 * Each state is kept with the round that produced it, together with the state that round
 * started from, so that a retried attempt of a round (same runId and round, new task) starts
 * from the same state as its first attempt did, not from what that attempt produced.
 */
export interface LocalStateStore {
  /**
   * The state a task of `round` starts from: the newest one produced by an earlier round
   * (undefined: first round, or unreadable: start fresh). States produced by `round` itself
   * (an earlier attempt) or by a later round are passed over. Without `round`: the newest
   * state saved for the run, whichever round produced it.
   */
  load(runId: string, round?: number): Promise<LocalState | undefined>;
  /**
   * Keep `state`, produced by training `round` (replacing an earlier attempt's), and the
   * state that round started from. Without `round` the state is kept untagged, as stores
   * before rounds were recorded did, and replaces every tagged one.
   */
  save(runId: string, state: LocalState, round?: number): Promise<void>;
}

/** How local state is turned into bytes (the trainer's `encodeLocalState`/`decodeLocalState`). */
export interface LocalStateCodec {
  encode(state: LocalState): Uint8Array;
  decode(bytes: Uint8Array): LocalState;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Local state as files `<stateDir>/<runId>.r<round>.bin` (0600, written atomically), the
 * round being the one that produced it; at most two per run (the newest and the one it
 * started from). `<runId>.bin` is the untagged file of earlier agents. A file that cannot
 * be decoded is logged and ignored: losing the target network costs a little training
 * progress, refusing to train would cost the round.
 */
export function fileLocalStateStore(
  stateDir: string,
  codec: LocalStateCodec,
  logger: Logger,
): LocalStateStore {
  // runId matches [A-Za-z0-9._:-]+ (protocol schema), so it cannot escape stateDir.
  const untaggedFile = (runId: string) => join(stateDir, `${runId}.bin`);
  const taggedFile = (runId: string, round: number) => join(stateDir, `${runId}.r${round}.bin`);

  /** Rounds with a saved state for `runId`, and whether an untagged file exists. */
  const saved = async (runId: string): Promise<{ rounds: number[]; untagged: boolean }> => {
    let names: string[];
    try {
      names = await readdir(stateDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { rounds: [], untagged: false };
      throw e;
    }
    // Anchored, so run "a" does not pick up run "a.r5"'s files ("a.r5.r3.bin").
    const tagged = new RegExp(`^${escapeRegExp(runId)}\\.r(\\d+)\\.bin$`);
    const rounds: number[] = [];
    for (const name of names) {
      const m = tagged.exec(name);
      if (m) rounds.push(Number(m[1]));
    }
    return { rounds: rounds.sort((a, b) => a - b), untagged: names.includes(`${runId}.bin`) };
  };

  const read = async (runId: string, path: string): Promise<LocalState | undefined> => {
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return codec.decode(new Uint8Array(bytes));
    } catch (e) {
      logger.warn({ runId, err: (e as Error).message }, 'local state unreadable, starting this run fresh');
      return undefined;
    }
  };

  return {
    async load(runId, round) {
      const { rounds, untagged } = await saved(runId);
      if (round === undefined) {
        const newest = rounds.at(-1);
        return read(runId, newest === undefined ? untaggedFile(runId) : taggedFile(runId, newest));
      }
      const later = rounds.filter((r) => r > round);
      if (later.length > 0) {
        // The coordinator never goes back within a run: a coordinator restored from a backup
        // (the state from before this round, if kept, fits its global model) or a new run
        // reusing the id (it starts at round 1: nothing is before it, so it starts fresh).
        // The later states are dropped at the next save.
        logger.warn(
          { runId, round, savedRound: later.at(-1) },
          'local state from a later round ignored: the run went back',
        );
      }
      if (rounds.includes(round))
        logger.info({ runId, round }, 'retried round: starting from the local state from before it');
      const before = rounds.filter((r) => r < round).at(-1);
      if (before !== undefined) {
        if (before < round - 1) {
          // A site that was offline for a round has nothing newer; its own older state still
          // beats a fresh target network and head (and it is what the first attempt used).
          logger.warn(
            { runId, round, savedRound: before },
            'local state is from an earlier round than the previous one (site missed rounds): continuing from it',
          );
        }
        return read(runId, taggedFile(runId, before));
      }
      if (untagged) {
        // Written by an agent before rounds were recorded, after the last round it trained:
        // for an upgrade between rounds that is exactly the state before this round. (Only
        // an upgrade between two attempts of a round makes it one round ahead, as it was.)
        logger.warn({ runId, round }, 'local state without its round: taken as the state before this round');
        return read(runId, untaggedFile(runId));
      }
      return undefined;
    },

    async save(runId, state, round) {
      if (round === undefined) {
        await writeSecureFile(untaggedFile(runId), codec.encode(state));
        const { rounds } = await saved(runId);
        await Promise.all(rounds.map((r) => rm(taggedFile(runId, r), { force: true })));
        return;
      }
      // Write first, then prune: a crash in between leaves extra files, which load ignores.
      await writeSecureFile(taggedFile(runId, round), codec.encode(state));
      const { rounds, untagged } = await saved(runId);
      // The state this round started from, kept for a retried attempt of it.
      const before = rounds.filter((r) => r < round).at(-1);
      const stale = rounds.filter((r) => r !== round && r !== before);
      await Promise.all(stale.map((r) => rm(taggedFile(runId, r), { force: true })));
      if (untagged && before !== undefined) await rm(untaggedFile(runId), { force: true });
    },
  };
}
