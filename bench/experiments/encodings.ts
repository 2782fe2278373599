import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { decodeWeights, encodeWeights, type DType, type NamedTensors } from '@fedssl/shared/codec';
import { selectBackend } from '../../site-agent/src/train/backend';
import { probeEncoder, siteStepsPerRound, trainingConfig, type ProbeFigures } from './arms';
import { busbra, pneumonia } from './definitions';
import {
  armSettingsOf,
  modelOf,
  parseExperimentArgs,
  type ExperimentDefinition,
  type ExperimentOptions,
} from './experiment';
import { openJournal } from './journal';
import { stat, type Stat } from './report';
import { simulateFederation } from './simulate';

/**
 * The probe-AUC cost of the update encodings (issue 6, "Transfer"): the same short federated
 * run — FedAvg-BYOL + metadata head, same seed, data, site split, rounds and steps per site —
 * once per `training.updateEncoding`, through the experiments' simulator (each agent encodes
 * its delta as the run says, the coordinator decodes it to float32 and folds it), then the
 * experiments' linear probe of each final global model. Differences between encodings of one
 * seed are paired: everything but the encoding is the same, and one thread's training is
 * deterministic (`test/experiments/encodings.test.ts` runs float32 twice and gets the same
 * weights). Bytes per round per site are what each agent's upload ledger recorded.
 *
 * Run as `npm run bench -- transfer --probe busbra|pneumonia [experiment options]` (bench/transfer.ts).
 */

export const ENCODINGS: readonly DType[] = ['float32', 'float16', 'int8'];

/** One federated run with one encoding and seed. */
export interface EncodingRun {
  encoding: DType;
  seed: number;
  probe: ProbeFigures;
  /** Optimizer steps summed over sites and rounds. */
  steps: number;
  seconds: number;
  /** CPU seconds of this process (training, both sides of the federation, probe). */
  cpuSeconds: number;
  publishedRounds: number;
  acceptedUpdates: number;
  /** Per round, per site: bytes of the accepted upload as sent, and of the model downloaded. */
  upload: number[][];
  download: number[][];
}

/** One encoding over every seed. */
export interface EncodingSummary {
  encoding: DType;
  seeds: number[];
  /** Probe AUC over seeds × folds. */
  auc: Stat;
  /** Per-seed fold means. */
  aucPerSeed: number[];
  /** Per seed: (fold-mean AUC − float32's of the same seed) × 100 (absent without float32). */
  deltaPoints?: number[];
  /** Per seed: ‖w − w_float32‖ / ‖w_float32‖ of the final global models (shared tensors). */
  weightDistance?: number[];
  /** Mean over rounds and sites. */
  uploadBytesPerRoundPerSite: number;
  downloadBytesPerRoundPerSite: number;
  steps: number;
  minutesPerRun: number;
}

export interface EncodingCostOutcome {
  runs: EncodingRun[];
  summaries: EncodingSummary[];
  table: string;
  resultLines: string[];
}

/** What `transfer --probe <experiment> [options]` asks for. */
export interface EncodingCostArgs {
  def: ExperimentDefinition;
  options: ExperimentOptions;
  encodings: DType[];
}

/**
 * Parse `--probe busbra|pneumonia` and the experiment options that follow (those of
 * `experiments/<name>`, plus `--encodings`). Defaults differ from the experiments' to fit a
 * small CPU budget: 1 epoch, 5 rounds, seeds 1 and 2, only the metadata FedAvg run.
 */
export function parseEncodingCostArgs(argv: readonly string[]): EncodingCostArgs {
  const args = argv.filter((a) => a !== '--');
  const at = args.indexOf('--probe');
  const name = args[at + 1];
  const def = name === 'busbra' ? busbra : name === 'pneumonia' ? pneumonia : undefined;
  if (at < 0 || !def) throw new Error(`--probe needs busbra or pneumonia, got ${name ?? 'nothing'}`);
  const rest = args.filter((_, i) => i !== at && i !== at + 1);
  const withEncodings: ExperimentDefinition = {
    ...def,
    extraOptions: { ...def.extraOptions, encodings: { type: 'string', default: ENCODINGS.join(',') } },
  };
  // Defaults first: a later occurrence of an option wins.
  const defaults = [
    '--epochs',
    '1',
    '--rounds',
    '5',
    '--seeds',
    '1,2',
    '--out',
    `/tmp/fedssl-transfer-probe-${def.name}`,
  ];
  const options = parseExperimentArgs(withEncodings, [...defaults, ...rest]);
  const encodings = String(options.extra.encodings).split(',').filter(Boolean) as DType[];
  for (const e of encodings)
    if (!ENCODINGS.includes(e)) throw new Error(`unknown encoding ${e}; one of ${ENCODINGS.join(', ')}`);
  return { def, options, encodings };
}

type JournalLine = { kind: 'run'; run: EncodingRun } | { kind: 'meta'; description: string; epochs: number };

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

function relativeDistance(a: NamedTensors, ref: NamedTensors): number {
  const byName = new Map(a.map((t) => [t.name, t.data]));
  let dd = 0;
  let rr = 0;
  for (const t of ref) {
    const x = byName.get(t.name)!;
    for (let i = 0; i < t.data.length; i++) {
      dd += (x[i]! - t.data[i]!) ** 2;
      rr += t.data[i]! ** 2;
    }
  }
  return Math.sqrt(dd / rr);
}

/** Per-encoding figures; deltas and distances are paired by seed against float32. */
export function summarizeEncodings(
  runs: readonly EncodingRun[],
  weightsOf: (encoding: DType, seed: number) => NamedTensors | undefined,
): EncodingSummary[] {
  const encodings = [...new Set(runs.map((r) => r.encoding))];
  const foldMean = (r: EncodingRun) => mean(r.probe.auc);
  return encodings.map((encoding) => {
    const rs = runs.filter((r) => r.encoding === encoding);
    const refs = rs.map((r) => runs.find((x) => x.encoding === 'float32' && x.seed === r.seed));
    const paired = encoding !== 'float32' && refs.every((x) => x !== undefined);
    const distances = paired
      ? rs.map((r) => {
          const w = weightsOf(encoding, r.seed);
          const ref = weightsOf('float32', r.seed);
          return w && ref ? relativeDistance(w, ref) : NaN;
        })
      : undefined;
    return {
      encoding,
      seeds: rs.map((r) => r.seed),
      auc: stat(rs.flatMap((r) => r.probe.auc)),
      aucPerSeed: rs.map(foldMean),
      ...(paired ? { deltaPoints: rs.map((r, i) => 100 * (foldMean(r) - foldMean(refs[i]!))) } : {}),
      ...(distances ? { weightDistance: distances } : {}),
      uploadBytesPerRoundPerSite: mean(rs.flatMap((r) => r.upload.flat())),
      downloadBytesPerRoundPerSite: mean(rs.flatMap((r) => r.download.flat())),
      steps: mean(rs.map((r) => r.steps)),
      minutesPerRun: mean(rs.map((r) => r.seconds)) / 60,
    };
  });
}

const signed = (x: number, digits: number): string => `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(digits)}`;

/** The Markdown table of {@link summarizeEncodings}. */
export function encodingTable(summaries: readonly EncodingSummary[]): string {
  const f32 = summaries.find((s) => s.encoding === 'float32');
  const lines = [
    '| encoding | upload per round per site | vs float32 | download per round per site | probe AUC, mean ± sd over seeds × folds | AUC per seed | Δ AUC vs float32 per seed (points) | ‖w − w_float32‖ / ‖w_float32‖ per seed |',
    '| -------- | ------------------------: | ---------: | --------------------------: | --------------------------------------- | ------------ | ---------------------------------- | -------------------------------------- |',
  ];
  for (const s of summaries) {
    const kb = (b: number) => `${(b / 1e3).toFixed(1)} kB`;
    lines.push(
      `| ${s.encoding} | ${kb(s.uploadBytesPerRoundPerSite)} | ${
        f32 ? `${((100 * s.uploadBytesPerRoundPerSite) / f32.uploadBytesPerRoundPerSite).toFixed(1)} %` : '–'
      } | ${kb(s.downloadBytesPerRoundPerSite)} | ${s.auc.mean.toFixed(4)} ± ${s.auc.sd.toFixed(4)} | ${s.aucPerSeed
        .map((a) => a.toFixed(4))
        .join(', ')} | ${s.deltaPoints?.map((d) => signed(d, 2)).join(', ') ?? '–'} | ${
        s.weightDistance?.map((d) => d.toExponential(2)).join(', ') ?? '–'
      } |`,
    );
  }
  return lines.join('\n');
}

/** `RESULT` lines: bytes, AUC and the paired AUC difference to float32 of each encoding. */
export function encodingResultLines(summaries: readonly EncodingSummary[]): string[] {
  const out: string[] = [];
  for (const s of summaries) {
    out.push(
      `RESULT transfer_probe_upload_bytes_per_round_per_site_${s.encoding}=${Math.round(s.uploadBytesPerRoundPerSite)} B`,
    );
    out.push(`RESULT transfer_probe_auc_${s.encoding}=${s.auc.mean.toFixed(4)} auc`);
    if (s.deltaPoints)
      out.push(
        `RESULT transfer_probe_auc_delta_${s.encoding}_vs_float32=${mean(s.deltaPoints).toFixed(2)} auc_points`,
      );
  }
  if (summaries.length) out.push(`RESULT transfer_probe_seeds=${summaries[0]!.seeds.length} seeds`);
  return out;
}

/**
 * Run the federated run of every encoding for every seed (journaled to
 * `<out>/encodings.jsonl`; `--resume` skips what is there), then print the table and
 * `RESULT` lines. Needs `--epochs` (the budget; no calibration here).
 */
export async function runEncodingCost(
  def: ExperimentDefinition,
  o: ExperimentOptions,
  encodings: readonly DType[] = ENCODINGS,
): Promise<EncodingCostOutcome> {
  if (o.epochs === undefined) throw new Error('the encoding comparison needs --epochs');
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const say = (s: string) => process.stderr.write(`[transfer --probe ${def.name}] ${s}\n`);
  const encodersDir = path.join(o.out, 'encoders');
  mkdirSync(encodersDir, { recursive: true });
  const backend = await selectBackend(logger, 'auto');
  const j = openJournal<JournalLine>(path.join(o.out, 'encodings.jsonl'), o.resume);
  const done = j.done;
  const data = await def.load({
    imageSize: o.imageSize,
    sites: o.sites,
    ...(o.maxImages !== undefined ? { maxImages: o.maxImages } : {}),
    out: o.out,
    argv: o.extra,
  });
  say(data.description);
  if (!done.some((d) => d.kind === 'meta'))
    j.append({ kind: 'meta', description: data.description, epochs: o.epochs });
  const model = modelOf(o);
  const settings = armSettingsOf(o, model, o.epochs, logger);
  const weightsFile = (encoding: DType, seed: number) =>
    path.join(encodersDir, `encoding-${encoding}-seed${seed}.fsw`);

  const runs: EncodingRun[] = [];
  for (const seed of o.seeds) {
    for (const encoding of encodings) {
      const previous = done.find(
        (d): d is Extract<JournalLine, { kind: 'run' }> =>
          d.kind === 'run' && d.run.encoding === encoding && d.run.seed === seed,
      );
      if (previous && existsSync(weightsFile(encoding, seed))) {
        say(`seed ${seed}, ${encoding}: from ${j.file}`);
        runs.push(previous.run);
        continue;
      }
      say(`seed ${seed}, ${encoding} ...`);
      const started = performance.now();
      const c0 = process.cpuUsage();
      const r = await simulateFederation({
        sites: data.sites,
        model,
        training: trainingConfig(settings, { updateEncoding: encoding }),
        rounds: o.rounds,
        seed,
        stepsPerRound: (site) => siteStepsPerRound(site, settings),
        logger,
      });
      const probe = await probeEncoder(model, r.weights, data.probe);
      const c = process.cpuUsage(c0);
      writeFileSync(weightsFile(encoding, seed), encodeWeights(r.weights));
      const run: EncodingRun = {
        encoding,
        seed,
        probe,
        steps: r.rounds.flat().reduce((n, p) => n + p.steps, 0),
        seconds: (performance.now() - started) / 1000,
        cpuSeconds: (c.user + c.system) / 1e6,
        publishedRounds: r.publishedRounds,
        acceptedUpdates: r.acceptedUpdates,
        upload: r.bytes.upload,
        download: r.bytes.download,
      };
      say(
        `  ${encoding}: AUC ${mean(probe.auc).toFixed(4)}, ${run.steps} steps, ` +
          `${(run.seconds / 60).toFixed(1)} min (${(run.cpuSeconds / 60).toFixed(1)} min CPU)`,
      );
      j.append({ kind: 'run', run });
      runs.push(run);
    }
  }

  const summaries = summarizeEncodings(runs, (encoding, seed) => {
    const file = weightsFile(encoding, seed);
    return existsSync(file) ? decodeWeights(new Uint8Array(readFileSync(file))).tensors : undefined;
  });
  const table = encodingTable(summaries);
  const stepsPerSite = data.sites.map((s) => siteStepsPerRound(s, settings)).join(', ');
  const cpuMinutes = runs.reduce((n, r) => n + r.cpuSeconds, 0) / 60;
  const header =
    `Probe cost of update encodings, ${def.title}: ${data.description}.\n` +
    `FedAvg-BYOL + metadata head (λ = ${o.lambda}), tiny ResNet ${model.widths ? `widths ${model.widths.join('-')}` : '16-32-64'}, ` +
    `${model.inputSize} px, batch ${o.batchSize}, Adam ${o.learningRate}; ${o.rounds} rounds, ${o.epochs} epochs over the pooled data ` +
    `(steps per round per site: ${stepsPerSite}); seeds ${o.seeds.join(', ')}; probe: ${data.probe.foldSource}; ` +
    `backend ${backend.name}; ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}; ${cpuMinutes.toFixed(1)} min CPU for the runs of this process` +
    `${o.smoke ? '; SMOKE RUN (not a result)' : ''}`;
  const resultLines = [
    ...encodingResultLines(summaries),
    `RESULT transfer_probe_rounds=${o.rounds} rounds`,
    `RESULT transfer_probe_epochs=${o.epochs} epochs`,
  ];
  writeFileSync(path.join(o.out, 'encodings.md'), `${header}\n\n${table}\n`);
  console.log(`\n${header}\n\n${table}\n`);
  for (const l of resultLines) console.log(l);
  return { runs, summaries, table, resultLines };
}
