import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import { decodeWeights, encodeWeights } from '@fedssl/shared/codec';
import {
  initSharedWeights,
  modelConfigSchema,
  trainingConfigSchema,
  type ModelConfig,
  type TrainingConfig,
} from '@fedssl/shared/model';
import { strategyConfigSchema, type StrategyConfigInput } from '../../coordinator/src/strategies/config';
import { selectBackend } from '../../site-agent/src/train/backend';
import { trainRound } from '../../site-agent/src/train/trainer';
import {
  ALL_ARMS,
  ARM_LABELS,
  federatedLabel,
  isFederatedArm,
  runArm,
  type ArmKey,
  type ArmResult,
  type ArmSettings,
  type SeedContext,
} from './arms';
import type { ExperimentData } from './data';
import { openJournal } from './journal';
import { writeChartPng, type Series } from './plots';
import { fineTuneFolds } from './finetune';
import {
  fineTuneResultLines,
  fineTuneTable,
  goals,
  markdownTable,
  resultLines,
  slug,
  stat,
  summarize,
  type FineTuneResult,
  type Row,
} from './report';

/**
 * The command line and the loop shared by the experiments (`busbra.ts`, `pneumonia.ts`):
 * load and split the data, fix one compute budget, run every arm for every seed (results
 * appended to `<out>/results.jsonl` as they finish, so `--resume` continues an interrupted
 * run), then print the table, the goals and `RESULT` lines and draw the plots.
 */

export interface ExperimentDefinition {
  /** Prefix of RESULT names and plot files (`busbra`, `pneumonia`). */
  name: string;
  title: string;
  defaults: { imageSize: number; sites: number };
  load(o: {
    imageSize: number;
    sites: number;
    maxImages?: number;
    out: string;
    argv: Record<string, string | boolean | undefined>;
  }): Promise<ExperimentData>;
  /** Extra options of this experiment (parsed as strings). */
  extraOptions?: Record<string, { type: 'string'; default: string }>;
}

/** Parsed options (also what the smoke test passes). */
export interface ExperimentOptions {
  budgetMinutes: number;
  /** Epochs over the pooled data; overrides the budget (no calibration). */
  epochs?: number;
  seeds: number[];
  imageSize: number;
  sites: number;
  rounds: number;
  arms: ArmKey[];
  smoke: boolean;
  out: string;
  imgDir: string;
  maxImages?: number;
  lambda: number;
  batchSize: number;
  learningRate: number;
  widths?: number[];
  /** Encoder normalization (docs/models.md: group norm for pretraining). */
  norm: 'batch' | 'group';
  fedemaTau: number;
  resume: boolean;
  /** Seeds whose federated arms are also probed after every round (for the plot). */
  probeRoundSeeds: number[];
  /** Encoders (row slugs, e.g. `centralized,fedavg_metadata`, or `all`) to fine-tune after pretraining. */
  finetune: string[];
  /** Skip pretraining: fine-tune the encoders an earlier run saved in `<out>/encoders`. */
  finetuneOnly: boolean;
  /** Train nothing: the table, RESULT lines and plots from `<out>/results.jsonl` (e.g. of an interrupted run). */
  reportOnly: boolean;
  finetuneEpochs: number;
  finetuneFractions: number[];
  /** `--strategy`: the federated arms' server strategy (a name or a JSON object; default FedAvg). */
  strategy?: StrategyConfigInput;
  /** `--training`: JSON training-config options merged into every federated arm's config. */
  federatedTraining?: Partial<TrainingConfig>;
  /** Label suffix of the federated rows under those overrides (`--variant`, default derived from them). */
  variant?: string;
  finetuneFolds?: number[];
  extra: Record<string, string | boolean | undefined>;
}

const ROOT = path.join(__dirname, '..', '..');

function normOf(v: string): 'batch' | 'group' {
  if (v !== 'batch' && v !== 'group') throw new Error(`--norm must be batch or group, got "${v}"`);
  return v;
}

export function parseExperimentArgs(def: ExperimentDefinition, argv: string[]): ExperimentOptions {
  const { values } = parseArgs({
    args: argv.filter((a) => a !== '--'),
    options: {
      'budget-minutes': { type: 'string', default: '3' },
      epochs: { type: 'string' },
      seeds: { type: 'string', default: '1,2,3' },
      'image-size': { type: 'string', default: String(def.defaults.imageSize) },
      sites: { type: 'string', default: String(def.defaults.sites) },
      rounds: { type: 'string', default: '8' },
      arms: { type: 'string', default: ALL_ARMS.join(',') },
      smoke: { type: 'boolean', default: false },
      out: { type: 'string', default: `/tmp/fedssl-exp-${def.name}` },
      'img-dir': { type: 'string' },
      'max-images': { type: 'string' },
      lambda: { type: 'string', default: '0.5' },
      batch: { type: 'string', default: '32' },
      lr: { type: 'string', default: '0.001' },
      widths: { type: 'string' },
      norm: { type: 'string', default: 'batch' },
      'fedema-tau': { type: 'string', default: '0.7' },
      resume: { type: 'boolean', default: false },
      'probe-round-seeds': { type: 'string' },
      finetune: { type: 'string', default: '' },
      'finetune-only': { type: 'boolean', default: false },
      'report-only': { type: 'boolean', default: false },
      'finetune-epochs': { type: 'string', default: '2' },
      'finetune-fractions': { type: 'string', default: '0.1,1' },
      'finetune-folds': { type: 'string' },
      strategy: { type: 'string' },
      training: { type: 'string' },
      variant: { type: 'string' },
      ...(def.extraOptions ?? {}),
    },
    strict: true,
  });
  const smoke = values.smoke === true;
  const list = (s: string) => s.split(',').filter(Boolean).map(Number);
  const seeds = smoke && values.seeds === '1,2,3' ? [1] : list(String(values.seeds));
  const arms = String(values.arms).split(',') as ArmKey[];
  for (const a of arms)
    if (!ALL_ARMS.includes(a)) throw new Error(`unknown arm ${a}; one of ${ALL_ARMS.join(', ')}`);
  const out = path.resolve(String(values.out));
  return {
    budgetMinutes: Number(values['budget-minutes']),
    ...(values.epochs !== undefined ? { epochs: Number(values.epochs) } : smoke ? { epochs: 1 } : {}),
    seeds,
    imageSize: smoke ? 16 : Number(values['image-size']),
    sites: Number(values.sites),
    rounds: smoke && values.rounds === '8' ? 2 : Number(values.rounds),
    arms,
    smoke,
    out,
    imgDir: path.resolve(String(values['img-dir'] ?? (smoke ? out : path.join(ROOT, 'docs', 'img')))),
    ...(values['max-images'] !== undefined
      ? { maxImages: Number(values['max-images']) }
      : smoke
        ? { maxImages: 160 }
        : {}),
    lambda: Number(values.lambda),
    batchSize: smoke ? 16 : Number(values.batch),
    learningRate: Number(values.lr),
    ...(values.widths ? { widths: list(String(values.widths)) } : smoke ? { widths: [4, 4, 4] } : {}),
    norm: normOf(String(values.norm)),
    fedemaTau: Number(values['fedema-tau']),
    resume: values.resume === true || values['report-only'] === true,
    probeRoundSeeds:
      values['probe-round-seeds'] !== undefined ? list(String(values['probe-round-seeds'])) : [seeds[0]!],
    // Smoke: fine-tune three encoders for one epoch, so the path runs on every smoke test.
    finetune: (smoke && values.finetune === ''
      ? 'random_init,centralized,fedavg_metadata'
      : String(values.finetune)
    )
      .split(',')
      .filter(Boolean),
    finetuneOnly: values['finetune-only'] === true,
    reportOnly: values['report-only'] === true,
    finetuneEpochs: smoke && values['finetune-epochs'] === '2' ? 1 : Number(values['finetune-epochs']),
    finetuneFractions: list(String(values['finetune-fractions'])),
    ...(values['finetune-folds'] !== undefined
      ? { finetuneFolds: list(String(values['finetune-folds'])) }
      : {}),
    ...overridesOf(values.strategy, values.training, values.variant),
    extra: values as Record<string, string | boolean | undefined>,
  };
}

/**
 * `--strategy`, `--training` and `--variant`, checked against the run-config schemas now
 * (a typo fails before hours of training, naming the option).
 */
function overridesOf(
  strategyArg: string | undefined,
  trainingArg: string | undefined,
  variantArg: string | undefined,
): Pick<ExperimentOptions, 'strategy' | 'federatedTraining' | 'variant'> {
  const json = (flag: string, v: string): unknown => {
    try {
      return JSON.parse(v);
    } catch {
      throw new Error(`${flag} must be JSON (e.g. '{"name":"fedavgm"}'), got ${v}`);
    }
  };
  const out: Pick<ExperimentOptions, 'strategy' | 'federatedTraining' | 'variant'> = {};
  const parts: string[] = [];
  if (strategyArg !== undefined) {
    const raw = strategyArg.trim().startsWith('{') ? json('--strategy', strategyArg) : strategyArg;
    const r = strategyConfigSchema.safeParse(raw);
    if (!r.success) throw new Error(`--strategy: ${r.error.issues.map((i) => i.message).join('; ')}`);
    out.strategy = raw as StrategyConfigInput;
    parts.push(
      typeof raw === 'string'
        ? raw
        : Object.entries(raw as Record<string, unknown>)
            .map(([k, v]) => (k === 'name' ? String(v) : `${k} ${String(v)}`))
            .join(' '),
    );
  }
  if (trainingArg !== undefined) {
    const raw = json('--training', trainingArg);
    const r = trainingConfigSchema.partial().safeParse(raw);
    if (!r.success || typeof raw !== 'object' || raw === null)
      throw new Error(
        `--training: ${r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
    out.federatedTraining = raw as Partial<TrainingConfig>;
    parts.push(...Object.entries(raw).map(([k, v]) => `${k} ${JSON.stringify(v)}`));
  }
  const variant = variantArg ?? parts.join(', ');
  if (variant) out.variant = variant;
  return out;
}

/** The encoder every arm trains: the tiny ResNet (smoke: a few thousand parameters). */
export function modelOf(o: ExperimentOptions): ModelConfig {
  return modelConfigSchema.parse({
    arch: 'tiny',
    inputSize: o.imageSize,
    norm: o.norm,
    ...(o.widths ? { widths: o.widths } : {}),
    ...(o.smoke
      ? { projectorHidden: 8, projectionDim: 4, metadataHidden: 4 }
      : { projectorHidden: 128, projectionDim: 64, metadataHidden: 64 }),
  });
}

/** The settings every arm shares, from the options, the model and the budget in epochs. */
export function armSettingsOf(
  o: ExperimentOptions,
  model: ModelConfig,
  epochs: number,
  logger: Logger,
): ArmSettings {
  return {
    model,
    batchSize: o.batchSize,
    learningRate: o.learningRate,
    lambda: o.lambda,
    rounds: o.rounds,
    epochs,
    fedemaTau: o.fedemaTau,
    ...(o.strategy !== undefined ? { strategy: o.strategy } : {}),
    ...(o.federatedTraining ? { federatedTraining: o.federatedTraining } : {}),
    ...(o.variant ? { variant: o.variant } : {}),
    logger,
  };
}

/** Seconds per optimizer step on the pooled data (1 warm-up step, then `steps` timed). */
async function secondsPerStep(model: ModelConfig, data: ExperimentData, o: ExperimentOptions, steps = 4) {
  const args = {
    model,
    training: trainingConfigSchema.parse({
      batchSize: o.batchSize,
      metadataWeight: o.lambda,
      localEpochs: 1000,
      maxStepsPerRound: 1,
    }),
    globalWeights: initSharedWeights(model, 1),
    dataset: data.probe.dataset,
    seed: 1,
    logger: pino({ level: 'silent' }),
  };
  await trainRound(args);
  const r = await trainRound({ ...args, training: { ...args.training, maxStepsPerRound: steps } });
  return r.metrics.seconds / r.metrics.steps;
}

/** What {@link runExperiment} returns (the smoke test reads it). */
export interface ExperimentOutcome {
  results: ArmResult[];
  rows: Row[];
  table: string;
  resultLines: string[];
  settings: ArmSettings;
  plots: string[];
  finetune: FineTuneResult[];
}

type Record_ =
  | { kind: 'result'; result: ArmResult }
  | { kind: 'ctx'; seed: number; ctx: SeedContext }
  | { kind: 'finetune'; result: FineTuneResult }
  | { kind: 'meta'; description: string; foldSource: string; epochs: number };

/** Run the experiment and print its report. */
export async function runExperiment(
  def: ExperimentDefinition,
  o: ExperimentOptions,
): Promise<ExperimentOutcome> {
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const say = (s: string) => process.stderr.write(`[${def.name}] ${s}\n`);
  mkdirSync(o.out, { recursive: true });
  mkdirSync(o.imgDir, { recursive: true });
  const backend = await selectBackend(logger, 'auto');
  const startedAt = new Date();
  const j = openJournal<Record_>(path.join(o.out, 'results.jsonl'), o.resume);
  const journal = j.file;
  const done = j.done;
  const meta = done.find((d) => d.kind === 'meta') as Extract<Record_, { kind: 'meta' }> | undefined;
  const data = o.reportOnly
    ? null
    : await def.load({
        imageSize: o.imageSize,
        sites: o.sites,
        ...(o.maxImages !== undefined ? { maxImages: o.maxImages } : {}),
        out: o.out,
        argv: o.extra,
      });
  const description = data?.description ?? meta?.description ?? '(data as in the run log)';
  const foldSource = data?.probe.foldSource ?? meta?.foldSource ?? '(as in the run log)';
  say(description);
  const model = modelOf(o);
  mkdirSync(path.join(o.out, 'encoders'), { recursive: true });
  writeFileSync(path.join(o.out, 'encoders', 'model.json'), JSON.stringify(model));

  let epochs = o.epochs ?? meta?.epochs ?? NaN;
  let calibration = '';
  if (data && o.epochs === undefined && !o.finetuneOnly) {
    const sps = await secondsPerStep(model, data, o);
    const steps = (o.budgetMinutes * 60) / sps;
    epochs = (steps * o.batchSize) / data.probe.dataset.count;
    calibration = `${sps.toFixed(2)} s/step measured → ${o.budgetMinutes} min ≈ ${Math.round(steps)} steps ≈ ${epochs.toFixed(2)} epochs`;
    say(calibration);
  }
  if (data && !meta) j.append({ kind: 'meta', description, foldSource, epochs });
  const settings = armSettingsOf(o, model, epochs, logger);

  const results: ArmResult[] = [];
  for (const seed of o.finetuneOnly ? [] : o.seeds) {
    const ctx: SeedContext = {};
    for (const d of done) if (d.kind === 'ctx' && d.seed === seed) Object.assign(ctx, d.ctx);
    for (const arm of o.arms) {
      // A federated arm under another --strategy/--training variant is another row, not this one.
      const federated = isFederatedArm(arm);
      const previous = done.filter(
        (d) =>
          d.kind === 'result' &&
          d.result.seed === seed &&
          d.result.arm === arm &&
          (!federated || d.result.label === federatedLabel(arm, settings)),
      );
      if (previous.length) {
        results.push(...previous.map((d) => (d as { result: ArmResult }).result));
        say(`seed ${seed}, ${ARM_LABELS[arm]}: from ${journal}`);
        continue;
      }
      if (!data) continue; // report only
      say(`seed ${seed}, ${ARM_LABELS[arm]} ...`);
      const rs = await runArm(arm, data, settings, seed, ctx, o.probeRoundSeeds.includes(seed));
      for (const r of rs) {
        if (r.weights) {
          writeFileSync(
            path.join(o.out, 'encoders', `${slug(r.label)}-seed${seed}.fsw`),
            encodeWeights(r.weights),
          );
          delete r.weights;
        }
        const auc = r.probe.auc.reduce((a, b) => a + b, 0) / r.probe.auc.length;
        say(`  ${r.label}: AUC ${auc.toFixed(3)}, ${r.steps} steps, ${(r.seconds / 60).toFixed(1)} min`);
        j.append({ kind: 'result', result: r });
      }
      results.push(...rs);
      if (ctx.fedemaScaler !== undefined) j.append({ kind: 'ctx', seed, ctx });
    }
  }

  if (o.finetuneOnly)
    for (const d of done) if (d.kind === 'result' && o.seeds.includes(d.result.seed)) results.push(d.result);
  // A report over merged journals shows every variant's rows (other --strategy/--training runs too).
  if (o.reportOnly)
    for (const d of done)
      if (
        d.kind === 'result' &&
        o.seeds.includes(d.result.seed) &&
        o.arms.includes(d.result.arm) &&
        !results.includes(d.result)
      )
        results.push(d.result);

  const tuned: FineTuneResult[] = [];
  if (o.finetune.length) {
    const labels = [...new Set(results.map((r) => r.label))].filter(
      (l) => o.finetune.includes('all') || o.finetune.includes(slug(l)),
    );
    for (const seed of o.seeds) {
      for (const label of labels) {
        for (const fraction of o.finetuneFractions) {
          const previous = done.find(
            (d) =>
              d.kind === 'finetune' &&
              d.result.label === label &&
              d.result.seed === seed &&
              d.result.fraction === fraction,
          );
          if (previous) {
            tuned.push((previous as { result: FineTuneResult }).result);
            continue;
          }
          const file = path.join(o.out, 'encoders', `${slug(label)}-seed${seed}.fsw`);
          if (!data || !existsSync(file)) continue;
          const started = performance.now();
          const f = await fineTuneFolds({
            model,
            weights: decodeWeights(new Uint8Array(readFileSync(file))).tensors,
            probe: data.probe,
            fraction,
            epochs: o.finetuneEpochs,
            batchSize: o.batchSize,
            learningRate: o.learningRate,
            seed,
            ...(o.finetuneFolds ? { folds: o.finetuneFolds } : {}),
          });
          const r: FineTuneResult = {
            label,
            seed,
            fraction,
            auc: f.auc,
            accuracy: f.accuracy,
            steps: f.steps,
            seconds: (performance.now() - started) / 1000,
            epochs: o.finetuneEpochs,
          };
          say(
            `fine-tune ${label}, seed ${seed}, ${fraction * 100} % labels: AUC ${stat(f.auc).mean.toFixed(3)} (${f.steps} steps)`,
          );
          j.append({ kind: 'finetune', result: r });
          tuned.push(r);
        }
      }
    }
  }

  const rows = summarize(results);
  const table = markdownTable(rows);
  const g = goals(rows);
  const totalSteps = results.find((r) => r.arm === 'centralized' || r.federation)?.steps;
  const header =
    `${def.title}: ${description}.\n` +
    `Encoder tiny ResNet ${model.widths ? `widths ${model.widths.join('-')}` : '16-32-64'}, ${model.norm} norm, ${model.inputSize} px; ` +
    `batch ${o.batchSize}, Adam ${o.learningRate}, λ = ${o.lambda} (metadata arms), ${o.rounds} rounds; ` +
    `budget ${epochs.toFixed(2)} epochs over the pooled data${totalSteps !== undefined ? ` (${totalSteps} steps per arm)` : ''}` +
    `${calibration ? ` — ${calibration}` : ''}; seeds ${o.seeds.join(', ')}; probe: ${foldSource}; ` +
    `backend ${backend.name}; ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}; ${o.reportOnly ? `report of ${journal}, made` : 'started'} ${startedAt.toISOString()}` +
    `${o.smoke ? '; SMOKE RUN (not a result)' : ''}`;
  const verdict =
    g.bestFederated && g.centralized
      ? `Best federated arm: ${g.bestFederated.label} ${g.bestFederated.auc.mean.toFixed(3)}; ` +
        `vs centralized ${g.centralized.auc.mean.toFixed(3)}: ${g.gapToCentralized.toFixed(1)} points ` +
        `(goal ≥ −1: ${g.metCentralized ? 'met' : 'not met'}); ` +
        (g.localRows.length
          ? `vs best local-only ${g.gapToBestLocal.toFixed(1)} points (goal ≥ 0: ${g.metLocal ? 'met' : 'not met'})`
          : 'vs best local-only: not measured (no local-only arm ran)')
      : '';
  const lines = resultLines(def.name, rows, {
    epochs: `${epochs.toFixed(3)} epochs`,
    rounds: `${o.rounds} rounds`,
    // The fewest seeds any row has (an interrupted run leaves later arms with fewer).
    seeds_min_per_row: `${Math.min(...rows.map((r) => r.seeds.length))} seeds`,
  });
  const plots = await drawPlots(def, results, rows, o);
  const ftTable = tuned.length
    ? `Fine-tuning (encoder unfrozen + logistic head, over the labelled part of the training folds, Adam ${o.learningRate}, no augmentation; epochs per column as journaled; cells: AUC mean ± sd (seeds × folds)):\n\n${fineTuneTable(tuned)}`
    : '';
  if (tuned.length) lines.push(...fineTuneResultLines(def.name, tuned));
  const text = [header, '', table, '', verdict, '', ftTable, '', ...plots.map((p) => `plot: ${p}`)].join(
    '\n',
  );
  writeFileSync(path.join(o.out, 'table.md'), `${text}\n`);
  console.log(`\n${text}\n`);
  for (const l of lines) console.log(l);
  return { results, rows, table, resultLines: lines, settings, plots, finetune: tuned };
}

/** Loss per round per site, and probe AUC per round, from the first seed probed per round. */
async function drawPlots(
  def: ExperimentDefinition,
  results: readonly ArmResult[],
  rows: readonly Row[],
  o: ExperimentOptions,
): Promise<string[]> {
  const out: string[] = [];
  const seed = o.probeRoundSeeds[0];
  const fed = results.filter((r) => r.federation && r.seed === seed);
  // Site k (site-k) is the k-th local-only row: name the curves after the hospital.
  const siteNames = results
    .filter((r) => r.arm === 'local' && r.seed === seed)
    .map((r) => r.label.replace(/^local-only /, ''));
  const siteName = (id: string) => siteNames[Number(id.replace(/^site-/, '')) - 1] ?? id;
  const lossSeries: Series[] = [];
  for (const r of fed.filter((x) => x.arm === 'fedavgMeta' || x.arm === 'fedavg')) {
    const siteIds = r.federation!.rounds[0]?.map((p) => p.siteId) ?? [];
    siteIds.forEach((siteId, k) =>
      lossSeries.push({
        name: `${r.label}: ${siteName(siteId)}`,
        dashed: r.arm === 'fedavg',
        colour: k,
        points: r.federation!.rounds.map((round, i) => [
          i + 1,
          round.find((p) => p.siteId === siteId)?.loss ?? NaN,
        ]),
      }),
    );
  }
  if (lossSeries.length) {
    const file = path.join(o.imgDir, `${def.name}-loss-per-round.png`);
    await writeChartPng(
      {
        title: `${def.title}: mean local training loss per round (seed ${seed})`,
        xLabel: 'round',
        yLabel: 'loss (BYOL + λ·metadata CE)',
        series: lossSeries,
      },
      file,
    );
    out.push(file);
  }
  const aucSeries: Series[] = fed
    .filter((r) => r.federation!.roundAuc?.length)
    .map((r) => ({ name: r.label, points: r.federation!.roundAuc!.map((a, i) => [i + 1, a]) }));
  if (aucSeries.length) {
    const seedMean = (label: string) => {
      const r = results.find((x) => x.label === label && x.seed === seed);
      return r ? r.probe.auc.reduce((a, b) => a + b, 0) / r.probe.auc.length : NaN;
    };
    const bestLocal = rows.filter((r) => r.arm === 'local').sort((a, b) => b.auc.mean - a.auc.mean)[0];
    const hlines = [
      { name: 'centralized', y: seedMean('centralized') },
      { name: 'random init', y: seedMean('random init') },
      ...(bestLocal ? [{ name: bestLocal.label, y: seedMean(bestLocal.label) }] : []),
    ].filter((h) => Number.isFinite(h.y));
    const file = path.join(o.imgDir, `${def.name}-probe-auc-per-round.png`);
    await writeChartPng(
      {
        title: `${def.title}: linear-probe AUC of the global model (seed ${seed})`,
        xLabel: 'round',
        yLabel: 'probe AUC (mean over folds)',
        series: aucSeries,
        hlines,
      },
      file,
    );
    out.push(file);
  }
  return out;
}
