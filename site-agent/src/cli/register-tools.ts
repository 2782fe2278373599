import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { resolveAgentHome } from '../config/agent-config';
import { createLogger, type CliIo } from './commands';
import { doctorCommand } from './doctor';
import { probeCommand } from './probe';
import { trainLocalCommand } from './train-local';
import type { ModelConfig } from '@fedssl/shared/model';

/**
 * Commander wiring of the tools for hospital IT (train-local, probe, doctor), kept apart
 * from agent-cli.ts so that file only gains one line per command.
 */

const io: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected an integer ≥ 0');
  return n;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number ≥ 0');
  return n;
}

function intList(value: string): number[] {
  const xs = value.split(',').map((v) => Number(v.trim()));
  if (xs.length === 0 || xs.some((n) => !Number.isInteger(n) || n < 1))
    throw new InvalidArgumentError('expected comma-separated positive integers, e.g. 16,32,64,128');
  return xs;
}

/** An AbortSignal fired by the first SIGINT/SIGTERM (a second one exits at once). */
function abortOnSignal(): AbortSignal {
  const ac = new AbortController();
  const on = () => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort();
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return ac.signal;
}

const backendOption = () =>
  new Option('--backend <name>', 'tfjs backend').choices(['auto', 'wasm', 'cpu', 'tensorflow']);
const archOption = () =>
  new Option('--arch <arch>', 'encoder architecture').choices(['tiny', 'resnet18', 'resnet50']);

export function registerTrainLocal(program: Command): void {
  program
    .command('train-local')
    .description('pretrain an encoder on local data only (BYOL + metadata head); resumable')
    .requiredOption('--data <path>', 'folder of images (optional manifest CSV beside it)')
    .requiredOption('--out <dir>', 'output folder: weights.fsw, manifest.json, checkpoint/')
    .option('--manifest <csv>', 'CSV manifest')
    .option('--patient-column <name>', 'manifest column holding the patient id')
    .option('--metadata-column <name>', 'manifest column for the metadata head (default: patient)')
    .option('--minutes <n>', 'training time budget in minutes', positiveNumber)
    .option('--epochs <n>', 'passes over the data', positiveInt)
    .option('--steps <n>', 'exact number of optimizer steps (overrides --epochs)', positiveInt)
    .addOption(archOption().default('tiny'))
    .option('--widths <list>', 'stem and stage widths, e.g. 16,16,32,64,128 for a small resnet18', intList)
    .option('--norm <kind>', 'group or batch normalization (group: the default, docs/models.md)', 'group')
    .option('--size <px>', 'input size in pixels', positiveInt, 64)
    .option('--lambda <l>', 'weight of the metadata loss (0 = BYOL only)', nonNegativeNumber, 0.5)
    .option('--seed <s>', 'random seed', nonNegativeInt, 1)
    .option('--batch-size <b>', 'batch size', positiveInt, 32)
    .option('--lr <rate>', 'Adam learning rate', positiveNumber)
    .option('--checkpoint-every <steps>', 'steps between checkpoints', positiveInt, 50)
    .option('--fresh', 'discard an existing checkpoint instead of resuming', false)
    .option('--home <dir>', 'agent home whose pseudonym secret to use')
    .addOption(backendOption())
    .option('--json', 'JSON summary', false)
    .action(
      async (o: {
        data: string;
        out: string;
        manifest?: string;
        patientColumn?: string;
        metadataColumn?: string;
        minutes?: number;
        epochs?: number;
        steps?: number;
        arch: ModelConfig['arch'];
        widths?: number[];
        norm: string;
        size: number;
        lambda: number;
        seed: number;
        batchSize: number;
        lr?: number;
        checkpointEvery: number;
        fresh: boolean;
        home?: string;
        backend?: 'auto';
        json: boolean;
      }) => {
        if (o.norm !== 'batch' && o.norm !== 'group')
          throw new InvalidArgumentError('--norm must be batch or group');
        process.exitCode = await trainLocalCommand(
          {
            data: o.data,
            out: o.out,
            arch: o.arch,
            norm: o.norm,
            size: o.size,
            lambda: o.lambda,
            seed: o.seed,
            batchSize: o.batchSize,
            checkpointEvery: o.checkpointEvery,
            fresh: o.fresh,
            json: o.json,
            logger: createLogger(),
            progressStream: process.stderr,
            signal: abortOnSignal(),
            ...(o.manifest !== undefined ? { manifest: o.manifest } : {}),
            ...(o.patientColumn !== undefined ? { patientColumn: o.patientColumn } : {}),
            ...(o.metadataColumn !== undefined ? { metadataColumn: o.metadataColumn } : {}),
            ...(o.minutes !== undefined ? { minutes: o.minutes } : {}),
            ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
            ...(o.steps !== undefined ? { steps: o.steps } : {}),
            ...(o.widths !== undefined ? { widths: o.widths } : {}),
            ...(o.lr !== undefined ? { learningRate: o.lr } : {}),
            ...(o.home !== undefined ? { home: o.home } : {}),
            ...(o.backend !== undefined ? { backend: o.backend } : {}),
          },
          io,
        );
      },
    );
}

export function registerProbe(program: Command): void {
  program
    .command('probe')
    .description('linear probe of a frozen encoder: patient-wise cross-validated AUC and accuracy')
    .requiredOption('--encoder <dir|random>', 'model folder (manifest.json + weights.fsw), or "random"')
    .requiredOption('--data <path>', 'folder of images (optional manifest CSV beside it)')
    .requiredOption('--label-column <name>', 'manifest column with the binary label')
    .option('--manifest <csv>', 'CSV manifest')
    .option('--patient-column <name>', 'manifest column holding the patient id')
    .option('--fold-column <name>', 'manifest column with official patient-wise folds')
    .option('--folds <k>', 'number of seeded patient-wise folds (without --fold-column)', positiveInt, 5)
    .addOption(archOption().default('tiny'))
    .option('--widths <list>', 'with --encoder random: stem and stage widths', intList)
    .option('--norm <kind>', 'with --encoder random: group or batch normalization', 'group')
    .option('--size <px>', 'with --encoder random: input size', positiveInt, 64)
    .option('--seed <s>', 'seed of the folds and of a random encoder', nonNegativeInt, 1)
    .option('--l2 <lambda>', 'L2 weight of the logistic regression', nonNegativeNumber)
    .addOption(backendOption())
    .option('--json', 'JSON output', false)
    .action(
      async (o: {
        encoder: string;
        data: string;
        labelColumn: string;
        manifest?: string;
        patientColumn?: string;
        foldColumn?: string;
        folds: number;
        arch: ModelConfig['arch'];
        widths?: number[];
        norm: string;
        size: number;
        seed: number;
        l2?: number;
        backend?: 'auto';
        json: boolean;
      }) => {
        if (o.norm !== 'batch' && o.norm !== 'group')
          throw new InvalidArgumentError('--norm must be batch or group');
        process.exitCode = await probeCommand(
          {
            encoder: o.encoder,
            norm: o.norm,
            data: o.data,
            labelColumn: o.labelColumn,
            folds: o.folds,
            arch: o.arch,
            size: o.size,
            seed: o.seed,
            json: o.json,
            logger: createLogger(),
            ...(o.manifest !== undefined ? { manifest: o.manifest } : {}),
            ...(o.patientColumn !== undefined ? { patientColumn: o.patientColumn } : {}),
            ...(o.foldColumn !== undefined ? { foldColumn: o.foldColumn } : {}),
            ...(o.widths !== undefined ? { widths: o.widths } : {}),
            ...(o.l2 !== undefined ? { l2: o.l2 } : {}),
            ...(o.backend !== undefined ? { backend: o.backend } : {}),
          },
          io,
        );
      },
    );
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check data, backend/GPU, disk, keys, enrollment, coordinator reachability and clock skew')
    .option('--home <dir>', 'agent home folder (default: $FEDSSL_AGENT_HOME or ./fedssl-agent)')
    .option('--data <path>', 'check this data path instead of the configured one')
    .addOption(backendOption())
    .option('--json', 'JSON output', false)
    .action(async (o: { home?: string; data?: string; backend?: 'auto'; json: boolean }) => {
      process.exitCode = await doctorCommand(
        {
          home: resolveAgentHome(o.home),
          json: o.json,
          logger: createLogger(),
          ...(o.data !== undefined ? { data: o.data } : {}),
          ...(o.backend !== undefined ? { backend: o.backend } : {}),
        },
        io,
      );
    });
}
