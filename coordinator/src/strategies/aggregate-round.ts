import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { decodeWeights, encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import { createStrategy } from './index';
import type { StrategyConfigInput } from './config';
import type { ScratchBuffers, UpdateSource } from './strategy';

/**
 * Server optimizer state on disk: `<dataDir>/strategy-state/<runId>/<version>.fsw`, the
 * state produced together with model `<version>` (fedssl-weights encoding, float32). It is
 * written atomically (temp file, fsync, rename) BEFORE the version is published, and is
 * immutable once there, so a published version always has its state and re-running an
 * interrupted aggregation rewrites the same bytes.
 */
export class StrategyStateStore {
  private readonly dir: string;

  constructor(dataDir: string, runId: string) {
    this.dir = join(dataDir, 'strategy-state', runId);
  }

  path(version: string): string {
    return join(this.dir, `${version}.fsw`);
  }

  /**
   * The state saved with `version`, or null when none was saved. With `buffers`, read into a
   * borrowed buffer and decoded as views of it (the caller gives the tensors back when done).
   */
  load(version: string, buffers?: ScratchBuffers): NamedTensors | null {
    const file = this.path(version);
    if (!existsSync(file)) return null;
    if (!buffers) return decodeWeights(new Uint8Array(readFileSync(file))).tensors;
    const fd = openSync(file, 'r');
    try {
      const size = fstatSync(fd).size;
      const bytes = buffers.acquire(size);
      let off = 0;
      while (off < size) {
        const n = readSync(fd, bytes, off, size - off, off);
        if (n === 0) {
          buffers.recycle([bytes]);
          throw new FedsslError(
            'STRATEGY_STATE_INVALID',
            `server state ${version} ended after ${off} of ${size} bytes`,
          );
        }
        off += n;
      }
      let tensors: NamedTensors;
      try {
        tensors = decodeWeights(bytes, undefined, { copy: false }).tensors;
      } catch (e) {
        buffers.recycle([bytes]);
        throw e;
      }
      // Decoded as copies (unaligned): the borrowed bytes are free again at once.
      if (!tensors.some((t) => t.data.buffer === bytes.buffer)) buffers.recycle([bytes]);
      return tensors;
    } finally {
      closeSync(fd);
    }
  }

  save(version: string, state: NamedTensors): void {
    mkdirSync(this.dir, { recursive: true });
    const bytes = encodeWeights(state);
    const tmp = join(this.dir, `.tmp-${version}-${randomBytes(6).toString('hex')}`);
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path(version));
  }
}

export interface RoundAggregationArgs {
  /** The run's `strategy` setting. */
  strategy: StrategyConfigInput | string;
  dataDir: string;
  runId: string;
  /** Round being aggregated (1-based); its base is round − 1. */
  round: number;
  baseVersion: string;
  /** The version about to be published; its server state is saved under this name. */
  version: string;
  global: NamedTensors;
  /** Accepted updates in siteId order. */
  updates: readonly UpdateSource[];
  /** Scratch memory to borrow (the update store's plaintext pool). */
  buffers?: ScratchBuffers;
}

/**
 * Runs a round's aggregation with the run's strategy: loads the server state of the base
 * version, aggregates (spilling to a scratch directory under the data dir if the strategy
 * is coordinate-wise), and saves the new server state before returning, so the caller can
 * publish the weights knowing the state is already durable.
 * @throws FedsslError STRATEGY_STATE_INVALID when a stateful strategy finds no state for a
 *   base version other than the initial one; whatever the strategy or a delta read throws.
 */
export function aggregateRound(args: RoundAggregationArgs): { weights: NamedTensors; strategyName: string } {
  const strategy = createStrategy(args.strategy);
  const states = new StrategyStateStore(args.dataDir, args.runId);
  let state: NamedTensors | null = null;
  if (strategy.stateful) {
    state = states.load(args.baseVersion, args.buffers);
    if (state === null && args.round > 1) {
      throw new FedsslError(
        'STRATEGY_STATE_INVALID',
        `${strategy.name}: no server state saved with base version ${args.baseVersion}`,
      );
    }
  }
  // One scratch directory per run; leftovers of an interrupted aggregation are removed.
  const scratchRoot = join(args.dataDir, 'aggregation-tmp');
  mkdirSync(scratchRoot, { recursive: true });
  for (const entry of readdirSync(scratchRoot)) {
    if (entry.startsWith(`${args.runId}.`))
      rmSync(join(scratchRoot, entry), { recursive: true, force: true });
  }
  const scratchDir = join(scratchRoot, `${args.runId}.${args.round}.${randomBytes(6).toString('hex')}`);
  mkdirSync(scratchDir, { mode: 0o700 });
  try {
    const out = strategy.aggregate({
      global: args.global,
      updates: args.updates,
      state,
      scratchDir,
      ...(args.buffers ? { buffers: args.buffers } : {}),
    });
    try {
      if (strategy.stateful && out.state) states.save(args.version, out.state);
    } finally {
      // Saved (or failed): nothing reads the new state in memory again; it may be borrowed.
      if (out.state) args.buffers?.recycle(out.state.map((t) => t.data));
    }
    return { weights: out.weights, strategyName: strategy.name };
  } finally {
    rmSync(scratchDir, { recursive: true, force: true });
    // The base state was read into borrowed memory (when there is a pool): done with it.
    if (state) args.buffers?.recycle(state.map((t) => t.data));
  }
}
