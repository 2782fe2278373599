import { z } from 'zod';

/**
 * What a run fixes about the network. Pure data: the coordinator validates it and
 * derives parameter names and shapes from it without loading TensorFlow.
 */
export const modelConfigSchema = z
  .object({
    /** Encoder family. `tiny` is a small ResNet for CPU demos and tests. */
    arch: z.enum(['tiny', 'resnet18', 'resnet50']),
    /** Side of the square training views, in pixels (global views). */
    inputSize: z.number().int().min(16).max(512),
    /** Channels of the stem and each stage; default depends on `arch`. */
    widths: z.array(z.number().int().min(1).max(2048)).min(1).max(5).optional(),
    /**
     * Normalization inside the encoder. Group norm by default: it is what beats random init
     * after BYOL + metadata pretraining (docs/results.md, issue 3) and keeps no per-site
     * running statistics. `batch` stays available (its TF.js graph takes any input size).
     */
    norm: z
      .enum(['batch', 'group'])
      .default('group')
      .describe('encoder normalization: group (default; no per-site running statistics) or batch'),
    /** Hidden width of projector and predictor MLPs. */
    projectorHidden: z.number().int().min(4).max(8192).default(256),
    /** Output width of projector and predictor (the BYOL embedding). */
    projectionDim: z.number().int().min(4).max(4096).default(64),
    /** Hidden width of the site-local metadata head. */
    metadataHidden: z.number().int().min(4).max(8192).default(128),
  })
  .strict();
export type ModelConfig = z.infer<typeof modelConfigSchema>;

/** The study's augmentation recipe for grayscale medical images; blur and jitter off by default. */
export const augmentationConfigSchema = z
  .object({
    randomResizedCrop: z
      .object({
        enabled: z.boolean().default(true),
        scaleMin: z.number().gt(0).max(1).default(0.3),
        scaleMax: z.number().gt(0).max(1).default(1),
      })
      .strict()
      .default({ enabled: true, scaleMin: 0.3, scaleMax: 1 }),
    horizontalFlip: z
      .object({ enabled: z.boolean().default(true), probability: z.number().min(0).max(1).default(0.5) })
      .strict()
      .default({ enabled: true, probability: 0.5 }),
    /** Extra small local views fed to the online branch (multi-crop). */
    multiCrop: z
      .object({
        localViews: z.number().int().min(0).max(8).default(2),
        /** Side of local views as a fraction of `inputSize`. */
        sizeFraction: z.number().gt(0).max(1).default(0.5),
        scaleMin: z.number().gt(0).max(1).default(0.05),
        scaleMax: z.number().gt(0).max(1).default(0.3),
      })
      .strict()
      .default({ localViews: 2, sizeFraction: 0.5, scaleMin: 0.05, scaleMax: 0.3 }),
    gaussianBlur: z
      .object({
        enabled: z.boolean().default(false),
        probability: z.number().min(0).max(1).default(0.5),
        sigmaMax: z.number().gt(0).default(2),
      })
      .strict()
      .default({ enabled: false, probability: 0.5, sigmaMax: 2 }),
    colorJitter: z
      .object({
        enabled: z.boolean().default(false),
        probability: z.number().min(0).max(1).default(0.8),
        brightness: z.number().min(0).max(1).default(0.4),
        contrast: z.number().min(0).max(1).default(0.4),
      })
      .strict()
      .default({ enabled: false, probability: 0.8, brightness: 0.4, contrast: 0.4 }),
    /**
     * Random grayscale per view (luma 0.299 R + 0.587 G + 0.114 B on every channel). fedssl
     * trains on 1-channel images, where it changes nothing; it is defined for RGB-derived
     * 3-channel inputs. Off by default.
     */
    grayscale: z
      .object({ enabled: z.boolean().default(false), probability: z.number().min(0).max(1).default(0.2) })
      .strict()
      .default({ enabled: false, probability: 0.2 }),
    /**
     * Batch-level mixup of the views' source images (see site-agent/src/train/augment.ts and
     * docs/architecture.md): λ ~ Beta(α, α) once per batch, folded to ≥ 0.5. Off by default.
     */
    mixup: z
      .object({ enabled: z.boolean().default(false), alpha: z.number().gt(0).max(10).default(0.2) })
      .strict()
      .default({ enabled: false, alpha: 0.2 }),
  })
  .strict();
export type AugmentationConfig = z.infer<typeof augmentationConfigSchema>;

/** Local training hyperparameters carried in every task. */
export const trainingConfigSchema = z
  .object({
    localEpochs: z.number().int().min(1).max(1000).default(1),
    /** Upper bound on optimizer steps per round (0 = no bound); keeps demos and tests short. */
    maxStepsPerRound: z.number().int().min(0).default(0),
    batchSize: z.number().int().min(2).max(4096).default(32),
    learningRate: z.number().gt(0).max(10).default(1e-3),
    weightDecay: z.number().min(0).max(1).default(0),
    /** Base EMA momentum τ of the target network; raised to 1 along a cosine schedule. */
    emaMomentum: z.number().min(0).max(1).default(0.99),
    /** λ: weight of the metadata cross-entropy added to the BYOL loss (0 disables the head). */
    metadataWeight: z.number().min(0).max(100).default(0.5),
    augmentation: augmentationConfigSchema.default(augmentationConfigSchema.parse({})),
    /**
     * How a site starts each round from the new global model: `replace` its online network
     * (FedAvg-BYOL), or `fedema`: an EMA of its previous local model and the global one with
     * μ = min(λ·‖w_global − w_local‖, 1) (Zhuang et al., ICLR 2022).
     */
    localUpdate: z
      .enum(['replace', 'fedema'])
      .default('replace')
      .describe(
        'how a site starts each round from the global model: replace its online network (FedAvg-BYOL) or fedema (divergence-aware EMA of local and global)',
      ),
    /** λ of FedEMA's divergence-aware μ (used with `localUpdate: 'fedema'`). */
    fedemaScaler: z
      .number()
      .min(0)
      .max(1e6)
      .default(1)
      .describe("FedEMA's λ in μ = min(λ·‖w_global − w_local‖, 1); used with localUpdate fedema"),
    /**
     * What a site's Adam optimizer starts each round from: `reset` (fresh moments, step 1 of
     * its bias correction, as before this option existed) or `keep`: the moments and step count
     * the site's previous round ended with, kept in its local state file (never uploaded); the
     * weights still come from the global model. Absent means `reset`, and is left absent rather
     * than defaulted so a run that does not ask for it sends the same task as before (which an
     * agent of the previous release accepts). Off until measured (docs/models.md).
     */
    siteOptimizerState: z
      .enum(['reset', 'keep'])
      .optional()
      .describe(
        "what a site's Adam optimizer starts each round from: reset (fresh moments; also when absent) or keep (the moments and step count of the site's previous round, never uploaded)",
      ),
    /**
     * Element type of the uploaded delta: `float32` (exact), `float16` (½ the bytes) or
     * `int8` (¼ the bytes, one scale per tensor). The coordinator decodes any of them to
     * float32; `bench/transfer.ts` measures the bytes and the error of each.
     */
    updateEncoding: z
      .enum(['float32', 'float16', 'int8'])
      .default('float32')
      .describe(
        'element type of the uploaded delta: float32 (exact), float16 (half the bytes) or int8 (a quarter)',
      ),
  })
  .strict();
export type TrainingConfig = z.infer<typeof trainingConfigSchema>;
