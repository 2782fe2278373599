import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import { initSharedWeights, type ModelConfig } from '@fedssl/shared/model';
import type { BackendPreference } from '../config/agent-config';
import { loadTrainingDataset } from '../data/load-dataset';
import type { ProbeResult } from '../eval/probe';
import type { CliIo } from './commands';
import { localModelConfig } from './train-local';

/** Options of `fedssl-agent probe`. */
export interface ProbeCommandOptions {
  /** A model folder (manifest.json + weights.fsw), or `random` for the random-init baseline. */
  encoder: string;
  data: string;
  labelColumn: string;
  manifest?: string;
  patientColumn?: string;
  /** Column with given (official, patient-wise) folds; otherwise `folds` seeded patient-wise folds. */
  foldColumn?: string;
  folds?: number;
  /** With `--encoder random`: the architecture, input size and init seed. */
  arch?: ModelConfig['arch'];
  widths?: number[];
  norm?: ModelConfig['norm'];
  size?: number;
  seed?: number;
  l2?: number;
  backend?: BackendPreference;
  json?: boolean;
  logger: Logger;
}

/** The probe's output (`--json`). */
export interface ProbeReport extends ProbeResult {
  encoder: { source: string; version: string; sha256: string | null; signed: boolean; model: ModelConfig };
  labelColumn: string;
  /** Which manifest value counts as positive: the later of the two in sort order. */
  positiveClass: string;
  foldSource: string;
}

/**
 * `fedssl-agent probe`: linear probe of a frozen encoder on labelled local data with
 * patient-wise cross-validation; prints AUC and accuracy as mean ± std over folds. Labels,
 * patients and images stay on the host; only the figures are printed.
 */
export async function probeCommand(opts: ProbeCommandOptions, io: CliIo): Promise<number> {
  const log = opts.logger;
  const { selectBackend } = await import('../train/backend.js');
  const { extractFeatures } = await import('../eval/features.js');
  const { readEncoderDir } = await import('../eval/encoder-file.js');
  const { crossValidateProbe } = await import('../eval/probe.js');
  await selectBackend(log, opts.backend ?? 'auto');

  let encoder: ProbeReport['encoder'];
  let weights;
  if (opts.encoder === 'random') {
    const model = localModelConfig(opts.arch ?? 'tiny', opts.size ?? 64, opts.widths, opts.norm);
    weights = initSharedWeights(model, opts.seed ?? 1);
    encoder = {
      source: 'random',
      version: `random-init seed ${opts.seed ?? 1}`,
      sha256: null,
      signed: false,
      model,
    };
  } else {
    const e = await readEncoderDir(opts.encoder);
    weights = e.weights;
    encoder = {
      source: opts.encoder,
      version: e.version,
      sha256: e.sha256,
      signed: e.signed,
      model: e.model,
    };
  }

  // Patients are needed only as groups, in memory. The key is fixed, not random: the seeded
  // folds and the class order follow the pseudonyms, so a random key gave another AUC on
  // every run of the same probe.
  const secret = new Uint8Array(32).fill(0x5a);
  const common = {
    path: opts.data,
    ...(opts.manifest !== undefined ? { manifest: opts.manifest } : {}),
    ...(opts.patientColumn !== undefined ? { patientColumn: opts.patientColumn } : {}),
    secret,
  };
  // loadTrainingDataset maps one column to classes per call; the image set and order are
  // the same in every call, so labels, patients and folds line up image by image.
  const labelled = await loadTrainingDataset({
    ...common,
    metadataColumn: opts.labelColumn,
    imageSize: encoder.model.inputSize,
    logger: log,
  });
  const patients = await loadTrainingDataset({ ...common, imageSize: 4 });
  const folds =
    opts.foldColumn !== undefined
      ? await loadTrainingDataset({ ...common, metadataColumn: opts.foldColumn, imageSize: 4 })
      : undefined;
  secret.fill(0);
  if (
    patients.dataset.count !== labelled.dataset.count ||
    (folds && folds.dataset.count !== labelled.dataset.count)
  ) {
    throw new FedsslError('PROBE_INVALID', 'the data changed while it was being read; run the probe again');
  }
  if (labelled.dataset.metadataClasses !== 2) {
    throw new FedsslError(
      'PROBE_INVALID',
      `label column "${opts.labelColumn}" has ${labelled.dataset.metadataClasses} classes (counting images without a value as one); the probe needs exactly 2`,
    );
  }

  const { features, dim } = await extractFeatures(encoder.model, weights, labelled.dataset);
  const result = crossValidateProbe({
    features,
    dim,
    labels: labelled.dataset.metadataLabels,
    groups: patients.dataset.metadataLabels,
    ...(folds ? { folds: folds.dataset.metadataLabels } : { k: opts.folds ?? 5 }),
    seed: opts.seed ?? 1,
    ...(opts.l2 !== undefined ? { l2: opts.l2 } : {}),
  });
  const report: ProbeReport = {
    ...result,
    encoder,
    labelColumn: opts.labelColumn,
    positiveClass: 'the later of the two label values in sort order',
    foldSource: folds ? `column "${opts.foldColumn}"` : `${opts.folds ?? 5} seeded patient-wise folds`,
  };
  log.info(
    { auc: result.auc, accuracy: result.accuracy, folds: result.folds.length, images: result.images },
    'linear probe finished',
  );
  if (opts.json) {
    io.out(JSON.stringify(report, null, 2));
    return 0;
  }
  io.out(formatProbeReport(report));
  return 0;
}

const pct = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');

/** Human form of a probe report: one row per fold, then mean ± std. */
export function formatProbeReport(r: ProbeReport): string {
  const lines = [
    `Encoder:   ${r.encoder.version} (${r.encoder.model.arch}, ${r.encoder.model.inputSize} px, ${r.dim} features${
      r.encoder.source === 'random' ? '' : r.encoder.signed ? ', signed manifest' : ', unsigned local model'
    })`,
    `Labels:    "${r.labelColumn}", ${r.positives} positive of ${r.images} images (positive = ${r.positiveClass})`,
    `Folds:     ${r.foldSource}; logistic regression, L2 ${r.l2}`,
    '',
    'fold  train  test  pos   AUC    acc',
  ];
  for (const f of r.folds) {
    lines.push(
      `${String(f.fold).padStart(4)}  ${String(f.trainImages).padStart(5)}  ${String(f.testImages).padStart(4)}  ${String(
        f.testPositives,
      ).padStart(3)}  ${pct(f.auc)}  ${pct(f.accuracy)}`,
    );
  }
  lines.push('');
  lines.push(`AUC       ${pct(r.auc.mean)} ± ${pct(r.auc.std)} (mean ± std over ${r.folds.length} folds)`);
  lines.push(`Accuracy  ${pct(r.accuracy.mean)} ± ${pct(r.accuracy.std)}`);
  return lines.join('\n');
}
