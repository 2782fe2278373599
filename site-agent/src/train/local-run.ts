import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { decodeWeights, encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { canonicalJson, sha256Hex } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { initSharedWeights, type ModelConfig, type TrainingConfig } from '@fedssl/shared/model';
import type { ModelManifest } from '@fedssl/shared/protocol';
import type { TrainingDataset } from '../data/dataset';
import { decodeLocalState, encodeLocalState, type LocalState } from './local-state';
import type { ProgressSample } from './progress';
import { trainRound } from './trainer';

/**
 * Standalone local pretraining (`fedssl-agent train-local`): BYOL + metadata head on the
 * site's own data, no coordinator. Training runs in chunks of `checkpointEvery` steps
 * through the same `trainRound` the federated path uses (one model code path); after each
 * chunk the online weights, target network, metadata head and Adam state are written to
 * `<out>/checkpoint/`, so a killed run continues from the last chunk when started again
 * with the same settings.
 */

export const WEIGHTS_FILE = 'weights.fsw';
export const MANIFEST_FILE = 'manifest.json';
export const CHECKPOINT_DIR = 'checkpoint';
const CHECKPOINT_META = 'checkpoint.json';
const CHECKPOINT_FORMAT = 'fedssl-train-local-checkpoint/1';
/** Steps of the first chunk of a time-budgeted run, which measures the speed. */
const FIRST_TIMED_CHUNK = 5;

/** Options of {@link trainLocal}. */
export interface TrainLocalOptions {
  model: ModelConfig;
  /** `localEpochs` and `maxStepsPerRound` are ignored: the budget below decides. */
  training: TrainingConfig;
  dataset: TrainingDataset;
  seed: number;
  outDir: string;
  /** Stop after this many optimizer steps and/or this many seconds of training (summed over resumes). */
  budget: { steps?: number; seconds?: number };
  /** Steps between checkpoints (default 50). */
  checkpointEvery?: number;
  /** Discard an existing checkpoint instead of resuming from it. */
  fresh?: boolean;
  logger: Logger;
  onProgress?: (p: ProgressSample) => void;
  /** Called after each checkpoint is on disk. */
  onCheckpoint?: (step: number) => void;
  signal?: AbortSignal;
  /** Recorded in the manifest. */
  provenance?: Record<string, unknown>;
}

/** What {@link trainLocal} did. */
export interface TrainLocalResult {
  steps: number;
  /** Training seconds over all runs of this output folder. */
  seconds: number;
  /** Step the run resumed from (0 for a fresh start). */
  resumedFromStep: number;
  lastLoss: number;
  imagesPerSecond: number;
  stoppedBy: 'steps' | 'time';
  weightsPath: string;
  manifestPath: string;
}

/** The manifest written beside a locally trained encoder. */
export interface LocalModelManifestFile {
  manifest: ModelManifest;
  /** Always null: nobody signed a locally trained model. */
  signature: null;
  keyId: null;
  unsigned: true;
  note: string;
  localTraining: Record<string, unknown>;
}

interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  /** Canonical JSON of what must not change across a resume. */
  identity: string;
  step: number;
  chunk: number;
  seconds: number;
  lastLoss: number;
  file: string;
  sha256: string;
}

function identityOf(o: TrainLocalOptions): string {
  const { localEpochs: _e, maxStepsPerRound: _m, ...training } = o.training;
  return canonicalJson({
    model: o.model,
    training,
    seed: o.seed,
    dataset: {
      count: o.dataset.count,
      height: o.dataset.height,
      width: o.dataset.width,
      metadataClasses: o.dataset.metadataClasses,
    },
  });
}

/** Write a file so readers see the old or the new content, never a torn one. */
async function writeAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, bytes, { mode: 0o600 });
  await rename(tmp, path);
}

const ONLINE = 'online.';

interface Checkpoint {
  meta: CheckpointMeta;
  online: NamedTensors;
  optimizer: NamedTensors;
  localState: LocalState;
}

async function readCheckpoint(dir: string): Promise<Checkpoint | undefined> {
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(await readFile(join(dir, CHECKPOINT_META), 'utf8')) as CheckpointMeta;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FedsslError(
      'TRAINING_FAILED',
      `checkpoint metadata in ${dir} is unreadable; remove the folder`,
    );
  }
  if (meta.format !== CHECKPOINT_FORMAT || !/^step-\d+\.fsw$/.test(meta.file)) {
    throw new FedsslError('TRAINING_FAILED', `checkpoint in ${dir} has an unknown format; remove the folder`);
  }
  const bytes = new Uint8Array(await readFile(join(dir, meta.file)));
  if (sha256Hex(bytes) !== meta.sha256) {
    throw new FedsslError('TRAINING_FAILED', `checkpoint ${meta.file} does not match its recorded hash`);
  }
  const state = new Uint8Array(await readFile(join(dir, meta.file.replace('.fsw', '.state'))));
  const { tensors } = decodeWeights(bytes);
  return {
    meta,
    online: tensors
      .filter((t) => t.name.startsWith(ONLINE))
      .map((t) => ({ ...t, name: t.name.slice(ONLINE.length) })),
    optimizer: tensors.filter((t) => t.name.startsWith('optimizer.')),
    localState: decodeLocalState(state),
  };
}

async function writeCheckpoint(dir: string, c: Checkpoint, previousFile: string | undefined): Promise<void> {
  const file = `step-${c.meta.step}.fsw`;
  const bytes = encodeWeights([...c.online.map((t) => ({ ...t, name: ONLINE + t.name })), ...c.optimizer]);
  await writeAtomic(join(dir, file.replace('.fsw', '.state')), encodeLocalState(c.localState));
  await writeAtomic(join(dir, file), bytes);
  // The metadata names the new files only once both are complete: a crash at any point
  // leaves a consistent checkpoint (the old one or the new one).
  await writeAtomic(
    join(dir, CHECKPOINT_META),
    JSON.stringify({ ...c.meta, file, sha256: sha256Hex(bytes) }),
  );
  if (previousFile && previousFile !== file) {
    await rm(join(dir, previousFile), { force: true });
    await rm(join(dir, previousFile.replace('.fsw', '.state')), { force: true });
  }
}

/** Seed of chunk `k`: each chunk draws its own batch order and augmentations. */
function chunkSeed(seed: number, chunk: number): number {
  return (seed + Math.imul(chunk + 1, 0x9e3779b1)) >>> 0;
}

/**
 * Pretrain an encoder on `dataset` until the step or time budget is spent, checkpointing
 * every `checkpointEvery` steps, then write `<outDir>/weights.fsw` (all shared parameters,
 * the coordinator's published format) and `<outDir>/manifest.json` (the model manifest,
 * marked unsigned). Resumes from `<outDir>/checkpoint/` when it holds a run with the same
 * model, training settings, seed and dataset shape.
 * @throws FedsslError TRAINING_FAILED for a checkpoint of a different run (pass `fresh`) or
 *   a damaged one; TRAINING_ABORTED when `signal` fires (the last checkpoint stays).
 */
export async function trainLocal(o: TrainLocalOptions): Promise<TrainLocalResult> {
  const maxSteps = o.budget.steps ?? Infinity;
  const maxSeconds = o.budget.seconds ?? Infinity;
  if (!Number.isFinite(maxSteps) && !Number.isFinite(maxSeconds)) {
    throw new FedsslError(
      'TRAINING_FAILED',
      'train-local needs a step or time budget (--epochs or --minutes)',
    );
  }
  const every = Math.max(1, o.checkpointEvery ?? 50);
  const ckDir = join(o.outDir, CHECKPOINT_DIR);
  await mkdir(ckDir, { recursive: true, mode: 0o700 });
  const identity = identityOf(o);

  let online = initSharedWeights(o.model, o.seed);
  let localState: LocalState | undefined;
  let optimizer: NamedTensors | undefined;
  let step = 0;
  let chunk = 0;
  let seconds = 0;
  let lastLoss = NaN;
  let previousFile: string | undefined;
  const existing = o.fresh ? undefined : await readCheckpoint(ckDir);
  if (o.fresh) await rm(join(ckDir, CHECKPOINT_META), { force: true });
  if (existing) {
    if (existing.meta.identity !== identity) {
      throw new FedsslError(
        'TRAINING_FAILED',
        `${ckDir} holds a checkpoint of a run with other settings (model, training, seed or data); use another --out or --fresh`,
      );
    }
    online = existing.online;
    localState = existing.localState;
    optimizer = existing.optimizer;
    ({ step, chunk, seconds, lastLoss } = existing.meta);
    previousFile = existing.meta.file;
    o.logger.info({ step, seconds: Math.round(seconds) }, 'resuming local training from checkpoint');
  }
  const resumedFromStep = step;
  const batch = Math.max(2, Math.min(o.training.batchSize, o.dataset.count));
  const quiet = o.logger.child({ component: 'trainer' }, { level: 'warn' });

  while (step < maxSteps && seconds < maxSeconds) {
    // With a time budget the total is an estimate from the speed so far (it sets the
    // EMA schedule and the ETA); with a step budget it is exact.
    const secPerStep = step > 0 ? seconds / step : NaN;
    const timed = Number.isFinite(maxSeconds);
    const known = Number.isFinite(secPerStep);
    // Before the speed is known, a short first chunk measures it (a full chunk could overrun
    // the budget) while the schedule assumes a long run (τ stays near its base).
    const byTime = known ? step + Math.ceil((maxSeconds - seconds) / secPerStep) : step + 1000;
    const total = Math.max(step + 1, Math.min(maxSteps, timed ? byTime : maxSteps));
    const n = Math.max(1, Math.min(every, total - step, timed && !known ? FIRST_TIMED_CHUNK : Infinity));
    const r = await trainRound({
      model: o.model,
      training: { ...o.training, localEpochs: Number.MAX_SAFE_INTEGER, maxStepsPerRound: n },
      globalWeights: online,
      dataset: o.dataset,
      seed: chunkSeed(o.seed, chunk),
      ...(localState ? { localState } : {}),
      ...(optimizer ? { optimizerState: optimizer } : {}),
      keepOptimizerState: true,
      schedule: { offset: step, total },
      logger: quiet,
      ...(o.signal ? { signal: o.signal } : {}),
      onProgress: (p) => {
        const done = step + p.step;
        const elapsed = seconds + (p.step * batch) / Math.max(p.imagesPerSecond, 1e-9);
        const rate = elapsed / done;
        o.onProgress?.({
          step: done,
          totalSteps: total,
          loss: p.loss,
          imagesPerSecond: p.imagesPerSecond,
          etaSeconds: Number.isFinite(maxSeconds)
            ? Math.min(maxSeconds - elapsed, rate * (total - done))
            : rate * (total - done),
        });
      },
    });
    online = r.weights;
    localState = r.localState;
    optimizer = r.optimizerState;
    step += r.metrics.steps;
    seconds += r.metrics.seconds;
    chunk++;
    lastLoss = r.metrics.loss;
    await writeCheckpoint(
      ckDir,
      {
        meta: { format: CHECKPOINT_FORMAT, identity, step, chunk, seconds, lastLoss, file: '', sha256: '' },
        online,
        optimizer: optimizer ?? [],
        localState,
      },
      previousFile,
    );
    previousFile = `step-${step}.fsw`;
    o.onCheckpoint?.(step);
  }

  const bytes = encodeWeights(online);
  const weightsPath = join(o.outDir, WEIGHTS_FILE);
  const manifestPath = join(o.outDir, MANIFEST_FILE);
  const createdAt = new Date().toISOString();
  const imagesPerSecond = seconds > 0 ? (step * batch) / seconds : 0;
  const file: LocalModelManifestFile = {
    manifest: {
      version: `local-${createdAt.replace(/[^0-9TZ]/g, '')}`,
      runId: null,
      round: 0,
      model: o.model,
      weightsSha256: sha256Hex(bytes),
      weightsBytes: bytes.length,
      parentVersion: null,
      parentSha256: null,
      sites: [],
      strategy: 'local',
      createdAt,
    },
    signature: null,
    keyId: null,
    unsigned: true,
    note: 'Trained locally by fedssl-agent train-local on this site only; not signed by a coordinator.',
    localTraining: {
      steps: step,
      seconds: Number(seconds.toFixed(1)),
      imagesPerSecond: Number(imagesPerSecond.toFixed(1)),
      seed: o.seed,
      lastLoss,
      images: o.dataset.count,
      metadataClasses: o.dataset.metadataClasses,
      training: { ...o.training, localEpochs: undefined, maxStepsPerRound: undefined },
      ...o.provenance,
    },
  };
  await writeAtomic(weightsPath, bytes);
  await writeAtomic(manifestPath, `${JSON.stringify(file, null, 2)}\n`);
  o.logger.info(
    {
      steps: step,
      seconds: Math.round(seconds),
      imagesPerSecond: file.localTraining.imagesPerSecond,
      lastLoss,
    },
    'local training finished; encoder written',
  );
  return {
    steps: step,
    seconds,
    resumedFromStep,
    lastLoss,
    imagesPerSecond,
    stoppedBy: step >= maxSteps ? 'steps' : 'time',
    weightsPath,
    manifestPath,
  };
}
