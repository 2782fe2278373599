/**
 * BUS-BRA evidence (issue 3): random init vs BYOL vs BYOL + metadata head, linear-probe AUC
 * (benign vs malignant, the official patient-wise folds).
 *
 *   npm run bench -- busbra [--epochs 8 | --minutes 3] [--size 64 --arch tiny --widths 16,32,64
 *        --norm batch --seeds 1,2,3 --lambda 0.5 --arms random,byol,byol_meta --jobs 2
 *        --data ../shared/data/busbra --out /tmp/fedssl-busbra]
 *
 * For every seed: `fedssl-agent train-local` with λ = 0 (BYOL only) and with λ > 0 (BYOL +
 * metadata head over pseudonymous patients), for a budget in epochs (deterministic: the same
 * steps whatever the machine's load) or in wall-clock minutes; then `fedssl-agent probe` on
 * each encoder and on a random-init encoder of the same architecture. The compiled CLI runs as
 * child processes (`npm run bench` builds first); `--jobs N` runs N of them at once (each
 * single-threaded wasm, so 2 on 2 cores). Every finished arm is appended to
 * `<out>/results.jsonl`; a rerun with the same flags skips what is recorded there (so an
 * interrupted run continues). Prints a Markdown table (mean ± std over seeds of the per-seed mean
 * fold AUC, and min–max), the training CPU time each arm cost, and RESULT lines.
 *
 * Dataset: Gómez-Flores, Gregorio-Calas, Pereira, "BUS-BRA: A Breast Ultrasound Dataset
 * for Assessing Computer-aided Diagnosis Systems", Medical Physics 2023.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { writeBusbraManifest } from './experiments/data';

const root = path.join(__dirname, '..');
const cli = path.join(root, 'site-agent', 'dist', 'cli', 'agent-cli.js');

const { values } = parseArgs({
  options: {
    epochs: { type: 'string' },
    minutes: { type: 'string' },
    size: { type: 'string', default: '32' },
    arch: { type: 'string', default: 'tiny' },
    widths: { type: 'string' },
    norm: { type: 'string', default: 'batch' },
    seeds: { type: 'string', default: '1,2,3' },
    lambda: { type: 'string', default: '0.5' },
    arms: { type: 'string', default: 'random,byol,byol_meta' },
    jobs: { type: 'string', default: '1' },
    data: { type: 'string', default: path.join(root, '..', 'shared', 'data', 'busbra') },
    out: { type: 'string', default: '/tmp/fedssl-busbra' },
  },
});
if (values.epochs !== undefined && values.minutes !== undefined) {
  throw new Error('give one budget: --epochs N or --minutes N');
}
const budget: string[] =
  values.epochs !== undefined ? ['--epochs', values.epochs] : ['--minutes', values.minutes ?? '3'];
const budgetLabel = values.epochs !== undefined ? `${values.epochs} epochs` : `${values.minutes ?? '3'} min`;
const seeds = values.seeds.split(',').map(Number);
const jobs = Math.max(1, Number(values.jobs));
const out = path.resolve(values.out);
mkdirSync(out, { recursive: true });
const modelArgs = [
  '--arch',
  values.arch,
  '--size',
  values.size,
  ...(values.widths ? ['--widths', values.widths] : []),
];

/** Run the agent CLI as a child process and parse its `--json` output. */
function agent(args: string[]): Promise<unknown> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args, '--json'], {
      env: { ...process.env, FEDSSL_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`fedssl-agent ${args[0]} failed (${code}): ${stderr}`));
      process.stderr.write(`  ${args[0]} done in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
      try {
        resolve(JSON.parse(stdout));
      } catch (e) {
        reject(new Error(`fedssl-agent ${args[0]} printed no JSON: ${String(e)}\n${stdout.slice(0, 500)}`));
      }
    });
  });
}

interface ProbeJson {
  auc: { mean: number; std: number };
  accuracy: { mean: number; std: number };
}
interface TrainJson {
  steps: number;
  seconds: number;
  cpuSeconds?: number;
  imagesPerSecond: number;
  lastLoss: number;
}
/** One finished arm and seed, as journaled in results.jsonl. */
interface Row {
  key: string;
  arm: string;
  seed: number;
  auc: number;
  accuracy: number;
  steps?: number;
  trainSeconds?: number;
  cpuSeconds?: number;
  imagesPerSecond?: number;
  lastLoss?: number;
  load: number[];
  finishedAt: string;
}

const manifest = writeBusbraManifest(values.data, out);
const images = path.join(values.data, 'images');
const common = ['--data', images, '--manifest', manifest];
const probeArgs = [...common, '--label-column', 'pathology', '--fold-column', 'fold'];
const allArms = [
  { key: 'random', label: 'random init', lambda: null },
  { key: 'byol', label: 'BYOL (λ = 0)', lambda: 0 },
  { key: 'byol_meta', label: `BYOL + metadata (λ = ${values.lambda})`, lambda: Number(values.lambda) },
] as const;
const wanted = new Set(values.arms.split(','));
const arms = allArms.filter((a) => wanted.has(a.key));

// Everything that changes the result is part of the journal key, so a rerun with other
// settings never mixes its rows with these.
const settings = [
  values.arch,
  values.widths ?? '-',
  values.size,
  values.norm,
  budgetLabel,
  values.lambda,
].join('|');
const journal = path.join(out, 'results.jsonl');
const done = new Map<string, Row>();
if (existsSync(journal)) {
  for (const line of readFileSync(journal, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const row = JSON.parse(line) as Row;
    done.set(row.key, row);
  }
}

async function runArm(arm: (typeof allArms)[number], seed: number): Promise<Row> {
  const key = `${settings}|${arm.key}|${seed}`;
  const recorded = done.get(key);
  if (recorded) return recorded;
  process.stderr.write(`seed ${seed}, ${arm.label}: started\n`);
  let train: TrainJson | undefined;
  let probe: ProbeJson;
  if (arm.lambda === null) {
    probe = (await agent([
      'probe',
      '--encoder',
      'random',
      ...modelArgs,
      '--norm',
      values.norm,
      '--seed',
      String(seed),
      ...probeArgs,
    ])) as ProbeJson;
  } else {
    const dir = path.join(out, `${arm.key}-${values.norm}-seed${seed}`);
    train = (await agent([
      'train-local',
      ...common,
      '--out',
      dir,
      '--fresh',
      ...budget,
      ...modelArgs,
      '--norm',
      values.norm,
      '--lambda',
      String(arm.lambda),
      '--seed',
      String(seed),
    ])) as TrainJson;
    probe = (await agent(['probe', '--encoder', dir, '--seed', String(seed), ...probeArgs])) as ProbeJson;
  }
  const row: Row = {
    key,
    arm: arm.key,
    seed,
    auc: probe.auc.mean,
    accuracy: probe.accuracy.mean,
    ...(train
      ? {
          steps: train.steps,
          trainSeconds: train.seconds,
          ...(train.cpuSeconds !== undefined ? { cpuSeconds: train.cpuSeconds } : {}),
          imagesPerSecond: train.imagesPerSecond,
          lastLoss: train.lastLoss,
        }
      : {}),
    load: loadavg().map((l) => Number(l.toFixed(1))),
    finishedAt: new Date().toISOString(),
  };
  appendFileSync(journal, `${JSON.stringify(row)}\n`);
  process.stderr.write(
    `seed ${seed}, ${arm.label}: AUC ${row.auc.toFixed(3)}  acc ${row.accuracy.toFixed(3)}\n`,
  );
  return row;
}

async function main(): Promise<void> {
  const started = new Date();
  // Longest work first, so `--jobs 2` keeps both cores busy until the end.
  const queue = seeds.flatMap((seed) => arms.map((arm) => ({ arm, seed }))).reverse();
  queue.sort((a, b) => Number(a.arm.lambda === null) - Number(b.arm.lambda === null));
  const rows: Row[] = [];
  await Promise.all(
    Array.from({ length: jobs }, async () => {
      for (let next = queue.shift(); next; next = queue.shift()) rows.push(await runArm(next.arm, next.seed));
    }),
  );

  const stat = (xs: number[]) => {
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
    return { m, sd, lo: Math.min(...xs), hi: Math.max(...xs) };
  };
  const f3 = (x: number) => x.toFixed(3);
  const of = (k: string) => rows.filter((r) => r.arm === k).sort((a, b) => a.seed - b.seed);
  console.log(
    `\nBUS-BRA linear probe, benign vs malignant, official 5 patient-wise folds; ${values.arch}` +
      `${values.widths ? ` (widths ${values.widths})` : ''} encoder, ${values.norm} norm, ${values.size} px,` +
      ` ${budgetLabel} of train-local per arm and seed, seeds ${seeds.join(', ')}, ${jobs} job(s) at once;` +
      ` ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}; started ${started.toISOString()}\n`,
  );
  console.log(
    '| encoder | AUC mean ± std over seeds | AUC min–max | accuracy mean ± std | steps per seed | train CPU min per seed |',
  );
  console.log('|---|---|---|---|---|---|');
  for (const arm of arms) {
    const rs = of(arm.key);
    const a = stat(rs.map((r) => r.auc));
    const c = stat(rs.map((r) => r.accuracy));
    const trained = arm.lambda !== null;
    const cpu = rs.map((r) => (r.cpuSeconds !== undefined ? (r.cpuSeconds / 60).toFixed(1) : '?'));
    console.log(
      `| ${arm.label} | ${f3(a.m)} ± ${f3(a.sd)} | ${f3(a.lo)}–${f3(a.hi)} | ${f3(c.m)} ± ${f3(c.sd)} | ${
        trained ? rs.map((r) => r.steps).join(', ') : '–'
      } | ${trained ? cpu.join(', ') : '–'} |`,
    );
  }
  for (const arm of arms) {
    console.log(
      `per-seed AUC ${arm.key}: ${of(arm.key)
        .map((r) => `${r.seed}:${f3(r.auc)}`)
        .join(' ')}`,
    );
  }
  const trainedRows = rows.filter((r) => r.imagesPerSecond !== undefined);
  console.log(
    `training speed: ${trainedRows.map((r) => r.imagesPerSecond!.toFixed(1)).join(', ')} images/s; ` +
      `wall-clock min: ${trainedRows.map((r) => ((r.trainSeconds ?? 0) / 60).toFixed(1)).join(', ')}`,
  );
  const mean = (k: string) => stat(of(k).map((r) => r.auc)).m;
  for (const arm of arms) console.log(`RESULT busbra_auc_${arm.key}=${f3(mean(arm.key))} auc`);
  if (wanted.has('random') && wanted.has('byol_meta')) {
    console.log(
      `RESULT busbra_gain_byol_meta_over_random=${((mean('byol_meta') - mean('random')) * 100).toFixed(1)} auc_points`,
    );
  }
  if (values.epochs !== undefined) console.log(`RESULT busbra_epochs_per_arm=${values.epochs} epochs`);
  else console.log(`RESULT busbra_minutes_per_arm=${values.minutes ?? '3'} min`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
