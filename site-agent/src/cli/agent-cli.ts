#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { resolveAgentHome } from '../config/agent-config';
import { asCodedError } from '../uplink/uplink';
import {
  agentVersion,
  checkDataCommand,
  createLogger,
  enrollCommand,
  initCommand,
  ledgerCommand,
  runCommand,
  type CliIo,
} from './commands';
import { rotateKeysCommand, showCoordinatorCommand } from './key-commands';
import { registerDoctor, registerProbe, registerTrainLocal } from './register-tools';

/**
 * `fedssl-agent`: the site agent's command line. Parses arguments and hands off to
 * commands.ts. Errors are one line on stderr and a non-zero exit.
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

const backendOption = () =>
  new Option('--backend <name>', 'tfjs backend').choices(['auto', 'wasm', 'cpu', 'tensorflow']);
const homeOption = () =>
  new Option('--home <dir>', 'agent home folder (default: $FEDSSL_AGENT_HOME or ./fedssl-agent)');

/** SIGINT/SIGTERM as a promise; a second signal exits at once. */
function stopSignal(): Promise<string> {
  return new Promise((resolve) => {
    let seen = false;
    const on = (sig: string) => {
      if (seen) process.exit(130);
      seen = true;
      resolve(sig);
    };
    process.on('SIGINT', () => on('SIGINT'));
    process.on('SIGTERM', () => on('SIGTERM'));
  });
}

/** Build the commander program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command('fedssl-agent')
    .description('fedssl site agent: trains locally, uploads signed encrypted weight deltas')
    .version(agentVersion());
  program.exitOverride();

  program
    .command('init')
    .description('create the agent home: site keys, pseudonym secret, config')
    .addOption(homeOption())
    .requiredOption('--data <path>', 'folder of PNG/JPEG images')
    .option('--manifest <csv>', 'CSV manifest (default: manifest.csv in the data folder, if present)')
    .option('--patient-column <name>', 'manifest column holding the patient id', 'patient_id')
    .option('--image-size <px>', 'working image side in pixels', positiveInt)
    .addOption(backendOption())
    .option('--force', 'replace existing keys (the site must enroll again)', false)
    .action(
      async (o: {
        home?: string;
        data: string;
        manifest?: string;
        patientColumn?: string;
        imageSize?: number;
        backend?: 'auto';
        force: boolean;
      }) => {
        process.exitCode = await initCommand(
          {
            home: resolveAgentHome(o.home),
            data: o.data,
            force: o.force,
            ...(o.manifest !== undefined ? { manifest: o.manifest } : {}),
            ...(o.patientColumn !== undefined ? { patientColumn: o.patientColumn } : {}),
            ...(o.imageSize !== undefined ? { imageSize: o.imageSize } : {}),
            ...(o.backend !== undefined ? { backend: o.backend } : {}),
          },
          io,
        );
      },
    );

  program
    .command('enroll')
    .description('register this site with the coordinator and pin its keys')
    .addOption(homeOption())
    .requiredOption('--coordinator <url>', 'coordinator URL, e.g. https://fedssl.example.org')
    .requiredOption('--token <token>', 'one-time enrollment token from the consortium admin')
    .option('--force', 'enroll again although already enrolled', false)
    .option(
      '--expect-fingerprint <fp>',
      "refuse to pin the coordinator unless its fingerprint is this one (from the admin's `fedssl-coordinator fingerprint`)",
    )
    .action(
      async (o: {
        home?: string;
        coordinator: string;
        token: string;
        force: boolean;
        expectFingerprint?: string;
      }) => {
        process.exitCode = await enrollCommand(
          {
            home: resolveAgentHome(o.home),
            coordinator: o.coordinator,
            token: o.token,
            force: o.force,
            ...(o.expectFingerprint !== undefined ? { expectFingerprint: o.expectFingerprint } : {}),
          },
          io,
        );
      },
    );

  program
    .command('rotate-keys')
    .description(
      'replace the site keys: the coordinator registers the new ones (signed by the old and the new key) and accepts the old ones for its grace period',
    )
    .addOption(homeOption())
    .action(async (o: { home?: string }) => {
      process.exitCode = await rotateKeysCommand({ home: resolveAgentHome(o.home) }, io);
    });

  program
    .command('show-coordinator')
    .description('show the pinned coordinator key id and fingerprint, to compare out of band')
    .addOption(homeOption())
    .option('--json', 'JSON output', false)
    .action(async (o: { home?: string; json: boolean }) => {
      process.exitCode = await showCoordinatorCommand({ home: resolveAgentHome(o.home), json: o.json }, io);
    });

  program
    .command('run')
    .description('connect to the coordinator and take training tasks')
    .addOption(homeOption())
    .addOption(backendOption())
    .option('--exit-after-tasks <n>', 'exit after n tasks have ended', positiveInt)
    .option(
      '--train-workers <n>',
      "training worker threads on the wasm/cpu backends (overrides config.json's trainWorkers; default: the cores, at most 2)",
      positiveInt,
    )
    .action(
      async (o: { home?: string; backend?: 'auto'; exitAfterTasks?: number; trainWorkers?: number }) => {
        process.exitCode = await runCommand({
          home: resolveAgentHome(o.home),
          logger: createLogger(),
          stopSignal: stopSignal(),
          ...(o.backend !== undefined ? { backend: o.backend } : {}),
          ...(o.trainWorkers !== undefined ? { trainWorkers: o.trainWorkers } : {}),
          ...(o.exitAfterTasks !== undefined ? { exitAfterTasks: o.exitAfterTasks } : {}),
        });
      },
    );

  program
    .command('ledger')
    .description('show the record of uploads and downloads')
    .addOption(homeOption())
    .option('--json', 'JSON output', false)
    .action(async (o: { home?: string; json: boolean }) => {
      process.exitCode = await ledgerCommand({ home: resolveAgentHome(o.home), json: o.json }, io);
    });

  program
    .command('check-data')
    .description(
      'read the data as training would and report counts, patients, unreadable files with reasons, sizes, intensities and metadata columns (no ids shown, nothing sent)',
    )
    .requiredOption(
      '--data <path|url>',
      'folder of PNG/JPEG or DICOM files, a MedMNIST .npz, or a DICOMweb root URL',
    )
    .addOption(
      new Option('--format <kind>', 'data format (default: detected)').choices([
        'folder',
        'dicom',
        'npz',
        'dicomweb',
      ]),
    )
    .option('--manifest <csv>', 'CSV manifest of an image folder')
    .option('--patient-column <name>', 'manifest column holding the patient id')
    .option('--metadata-column <name>', 'column or DICOM tag used as metadata classes instead of the patient')
    .option('--label-column <name>', 'manifest column holding a label')
    .addOption(new Option('--split <name>', '.npz split').choices(['train', 'val', 'test', 'all']))
    .option('--image-size <px>', 'working image side in pixels', positiveInt)
    .option('--json', 'JSON output', false)
    .action(
      async (o: {
        data: string;
        format?: 'folder' | 'dicom' | 'npz' | 'dicomweb';
        manifest?: string;
        patientColumn?: string;
        metadataColumn?: string;
        labelColumn?: string;
        split?: 'train' | 'val' | 'test' | 'all';
        imageSize?: number;
        json: boolean;
      }) => {
        const { json, ...rest } = o;
        const defined = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
        process.exitCode = await checkDataCommand(
          {
            ...(defined as typeof rest),
            json,
            // Logs share stdout with the report: only warnings unless asked for more.
            logger: createLogger({
              ...process.env,
              FEDSSL_LOG_LEVEL: process.env.FEDSSL_LOG_LEVEL ?? 'warn',
            }),
          },
          io,
        );
      },
    );
  registerTrainLocal(program);
  registerProbe(program);
  registerDoctor(program);
  return program;
}

/** Run the CLI on `argv`; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    const x = e as { code?: string; exitCode?: number };
    // commander reports --help/--version and usage errors by throwing (exitOverride).
    if (typeof x.code === 'string' && x.code.startsWith('commander.')) return x.exitCode ?? 2;
    const coded = asCodedError(e);
    io.err(coded ? `error: [${coded.code}] ${coded.message}` : `error: ${(e as Error).message ?? String(e)}`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv).then((code) => process.exit(code));
}
