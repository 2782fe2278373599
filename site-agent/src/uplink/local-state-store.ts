import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeSecureFile } from '../config/secure-files';
import type { LocalState } from '../train/local-state';

/**
 * Where a site keeps its per-run local state (BYOL target network, metadata head) between
 * rounds. It never leaves the site.
 */
export interface LocalStateStore {
  /** The state saved for `runId`, or undefined (first round, or unreadable: start fresh). */
  load(runId: string): Promise<LocalState | undefined>;
  save(runId: string, state: LocalState): Promise<void>;
}

/** How local state is turned into bytes (the trainer's `encodeLocalState`/`decodeLocalState`). */
export interface LocalStateCodec {
  encode(state: LocalState): Uint8Array;
  decode(bytes: Uint8Array): LocalState;
}

/**
 * Local state as files `<stateDir>/<runId>.bin` (0600, written atomically). A file that
 * cannot be decoded is logged and ignored: losing the target network costs a little
 * training progress, refusing to train would cost the round.
 */
export function fileLocalStateStore(
  stateDir: string,
  codec: LocalStateCodec,
  logger: Logger,
): LocalStateStore {
  // runId matches [A-Za-z0-9._:-]+ (protocol schema), so it cannot escape stateDir.
  const file = (runId: string) => join(stateDir, `${runId}.bin`);
  return {
    async load(runId) {
      let bytes: Buffer;
      try {
        bytes = await readFile(file(runId));
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
    },
    async save(runId, state) {
      await writeSecureFile(file(runId), codec.encode(state));
    },
  };
}
