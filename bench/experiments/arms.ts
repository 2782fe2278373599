import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { decodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import {
  augmentationConfigSchema,
  initSharedWeights,
  trainingConfigSchema,
  type ModelConfig,
  type TrainingConfig,
} from '@fedssl/shared/model';
import type { TrainingDataset } from '../../site-agent/src/data/dataset';
import { extractFeatures } from '../../site-agent/src/eval/features';
import { crossValidateProbe } from '../../site-agent/src/eval/probe';
import { trainLocal } from '../../site-agent/src/train/local-run';
import type { ExperimentData, ProbeData, SiteData } from './data';
import type { StrategyConfigInput } from '../../coordinator/src/strategies/config';
import { simulateFederation, type SiteRound } from './simulate';

/**
 * The arms of the federated experiments and the one compute budget they share.
 *
 * Budget: E epochs over the pooled data, split into R rounds. A site trains
 * s_k = max(1, round(E·n_k / (B·R))) steps per round (the same fraction of its own data
 * every round, as FedAvg's local epochs would); every federated arm therefore costs
 * Σ_k R·s_k optimizer steps of batch B. Centralized training gets exactly that many steps on
 * the pooled data, and each site's local-only model exactly the R·s_k steps it spends in the
 * federation — every arm sees every image equally often.
 */

/** Names of the table rows (the issue fixes them). */
export const ARM_LABELS = {
  random: 'random init',
  local: 'local-only',
  centralized: 'centralized',
  fedavg: 'fedavg',
  fedavgMeta: 'fedavg + metadata',
  fedemaMeta: 'fedema + metadata',
  augAblation: 'fedavg + metadata, + blur + jitter',
  // The same ablation for the arms federation is judged against, so a federated arm with
  // blur + jitter is compared with centralized and local-only models trained the same way.
  centralizedAug: 'centralized, + blur + jitter',
  localAug: 'local-only, + blur + jitter',
} as const;
export type ArmKey = keyof typeof ARM_LABELS;
export const ALL_ARMS: ArmKey[] = [
  'random',
  'local',
  'centralized',
  'fedavg',
  'fedavgMeta',
  'fedemaMeta',
  'augAblation',
  'centralizedAug',
  'localAug',
];

/** Arms that run through the round engine (the others train with `train-local` or not at all). */
export function isFederatedArm(arm: ArmKey): boolean {
  return !['random', 'local', 'centralized', 'localAug', 'centralizedAug'].includes(arm);
}

/** Settings shared by every arm of an experiment. */
export interface ArmSettings {
  model: ModelConfig;
  batchSize: number;
  learningRate: number;
  /** λ of the metadata head in the "+ metadata" arms and in local-only/centralized. */
  lambda: number;
  rounds: number;
  /** Epochs over the pooled data (the compute budget). */
  epochs: number;
  /** FedEMA's target μ after round 1 (the paper's autoscaler τ; λ = τ / mean divergence). */
  fedemaTau: number;
  /** Server strategy of every federated arm (default FedAvg). */
  strategy?: StrategyConfigInput;
  /** Training-config options merged into every federated arm's config (the arm's own options win). */
  federatedTraining?: Partial<TrainingConfig>;
  /** Label suffix naming those overrides, so a variant gets its own table row. */
  variant?: string;
  logger?: Logger;
}

/** Row label of a federated arm under the settings' variant (`fedavg + metadata [fedavgm]`). */
export function federatedLabel(arm: ArmKey, s: Pick<ArmSettings, 'variant'>): string {
  return s.variant ? `${ARM_LABELS[arm]} [${s.variant}]` : ARM_LABELS[arm];
}

/** One probe of one encoder: per-fold figures. */
export interface ProbeFigures {
  auc: number[];
  accuracy: number[];
}

/** What one arm gave for one seed (a local-only arm gives one per site). */
export interface ArmResult {
  arm: ArmKey;
  /** Row label, e.g. `local-only GE Logiq 7`. */
  label: string;
  seed: number;
  probe: ProbeFigures;
  steps: number;
  seconds: number;
  /** The pretrained encoder's shared weights (not journaled; saved to a file by the runner). */
  weights?: NamedTensors;
  /** Federated arms: what the round engine did. */
  federation?: {
    publishedRounds: number;
    acceptedUpdates: number;
    taskOffers: number;
    rounds: SiteRound[][];
    /** Probe AUC (mean over folds) of the global model after each round, when measured. */
    roundAuc?: number[];
    fedemaScaler?: number;
  };
}

/** Linear probe of `weights` with the experiment's one protocol (same folds for every arm). */
export async function probeEncoder(
  model: ModelConfig,
  weights: NamedTensors,
  probe: ProbeData,
): Promise<ProbeFigures> {
  const { features, dim } = await extractFeatures(model, weights, probe.dataset);
  const r = crossValidateProbe({
    features,
    dim,
    labels: probe.labels,
    groups: probe.groups,
    ...(probe.folds ? { folds: probe.folds } : { k: 5, seed: 1 }),
  });
  return { auc: r.folds.map((f) => f.auc), accuracy: r.folds.map((f) => f.accuracy) };
}

/** Steps per round of each site under the shared budget. */
export function siteStepsPerRound(site: SiteData, s: ArmSettings): number {
  return Math.max(1, Math.round((s.epochs * site.dataset.count) / (s.batchSize * s.rounds)));
}

/** The run's training config of an arm: the shared settings, then `over`. */
export function trainingConfig(s: ArmSettings, over: Partial<TrainingConfig> = {}): TrainingConfig {
  return trainingConfigSchema.parse({
    batchSize: s.batchSize,
    learningRate: s.learningRate,
    metadataWeight: s.lambda,
    // Per-site steps are set by the simulator (see siteStepsPerRound).
    maxStepsPerRound: 1,
    ...over,
  });
}

/** Pretrain on one dataset with the agent's `train-local` code path for exactly `steps` steps. */
async function trainStandalone(
  s: ArmSettings,
  dataset: TrainingDataset,
  steps: number,
  seed: number,
  over: Partial<TrainingConfig> = {},
): Promise<{ weights: NamedTensors; seconds: number }> {
  const out = mkdtempSync(join(tmpdir(), 'fedssl-exp-local-'));
  try {
    const r = await trainLocal({
      model: s.model,
      training: trainingConfig(s, over),
      dataset,
      seed,
      outDir: out,
      budget: { steps },
      // One chunk per round-equivalent, as the federated arms restart each round.
      checkpointEvery: Math.max(1, Math.ceil(steps / s.rounds)),
      fresh: true,
      logger: s.logger ?? pino({ level: 'silent' }),
    });
    return {
      weights: decodeWeights(new Uint8Array(readFileSync(r.weightsPath))).tensors,
      seconds: r.seconds,
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** The blur + colour-jitter variant of the study recipe (the augmentation ablation). */
const BLUR_JITTER = augmentationConfigSchema.parse({
  gaussianBlur: { enabled: true },
  colorJitter: { enabled: true },
});

/** Context an arm may need from arms run before it in the same seed. */
export interface SeedContext {
  /** FedEMA's scaler λ, from the `fedavg + metadata` arm's round-1 divergence. */
  fedemaScaler?: number;
}

/**
 * Run one arm for one seed. `probeRounds`: also probe the global model after every round
 * (federated arms; costs one feature pass per round).
 */
export async function runArm(
  arm: ArmKey,
  data: ExperimentData,
  s: ArmSettings,
  seed: number,
  ctx: SeedContext,
  probeRounds = false,
): Promise<ArmResult[]> {
  const fedSteps = data.sites.map((site) => s.rounds * siteStepsPerRound(site, s));
  const totalSteps = fedSteps.reduce((a, b) => a + b, 0);
  const started = performance.now();
  if (arm === 'random') {
    const weights = initSharedWeights(s.model, seed);
    const probe = await probeEncoder(s.model, weights, data.probe);
    return [{ arm, label: ARM_LABELS.random, seed, probe, steps: 0, seconds: 0, weights }];
  }
  const standaloneOver = arm === 'localAug' || arm === 'centralizedAug' ? { augmentation: BLUR_JITTER } : {};
  if (arm === 'local' || arm === 'localAug') {
    const out: ArmResult[] = [];
    for (const [k, site] of data.sites.entries()) {
      const t = await trainStandalone(s, site.dataset, fedSteps[k]!, seed, standaloneOver);
      out.push({
        arm,
        label:
          arm === 'local'
            ? `${ARM_LABELS.local} ${site.name}`
            : `${ARM_LABELS.local} ${site.name}, + blur + jitter`,
        seed,
        probe: await probeEncoder(s.model, t.weights, data.probe),
        steps: fedSteps[k]!,
        seconds: t.seconds,
        weights: t.weights,
      });
    }
    return out;
  }
  if (arm === 'centralized' || arm === 'centralizedAug') {
    const t = await trainStandalone(s, data.probe.dataset, totalSteps, seed, standaloneOver);
    return [
      {
        arm,
        label: ARM_LABELS[arm],
        seed,
        probe: await probeEncoder(s.model, t.weights, data.probe),
        steps: totalSteps,
        seconds: t.seconds,
        weights: t.weights,
      },
    ];
  }
  const over: Partial<TrainingConfig> =
    arm === 'fedavg'
      ? { metadataWeight: 0 }
      : arm === 'fedemaMeta'
        ? { localUpdate: 'fedema', fedemaScaler: ctx.fedemaScaler ?? 1 }
        : arm === 'augAblation'
          ? { augmentation: BLUR_JITTER }
          : {};
  const r = await simulateFederation({
    sites: data.sites,
    model: s.model,
    training: trainingConfig(s, { ...s.federatedTraining, ...over }),
    rounds: s.rounds,
    seed,
    ...(s.strategy !== undefined ? { strategy: s.strategy } : {}),
    stepsPerRound: (site) => siteStepsPerRound(site, s),
    ...(s.logger ? { logger: s.logger } : {}),
  });
  if (arm === 'fedavgMeta') {
    const d = r.round1Divergence.reduce((a, b) => a + b, 0) / r.round1Divergence.length;
    if (d > 0) ctx.fedemaScaler = s.fedemaTau / d;
  }
  const roundAuc: number[] = [];
  // Per-round curves only for the two metadata arms: each costs a feature pass over all images per round.
  probeRounds &&= arm === 'fedavgMeta' || arm === 'fedemaMeta';
  if (probeRounds) {
    for (const w of r.roundWeights) {
      const p = await probeEncoder(s.model, w, data.probe);
      roundAuc.push(p.auc.reduce((a, b) => a + b, 0) / p.auc.length);
    }
  }
  return [
    {
      arm,
      label: federatedLabel(arm, s),
      seed,
      probe: await probeEncoder(s.model, r.weights, data.probe),
      steps: r.rounds.flat().reduce((n, p) => n + p.steps, 0),
      seconds: (performance.now() - started) / 1000,
      weights: r.weights,
      federation: {
        publishedRounds: r.publishedRounds,
        acceptedUpdates: r.acceptedUpdates,
        taskOffers: r.taskOffers,
        rounds: r.rounds,
        ...(probeRounds ? { roundAuc } : {}),
        ...(arm === 'fedemaMeta' ? { fedemaScaler: ctx.fedemaScaler ?? 1 } : {}),
      },
    },
  ];
}
