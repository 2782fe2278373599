/**
 * BUS-BRA evidence: random init vs BYOL vs BYOL + metadata head, linear-probe AUC (benign vs malignant).
 *
 *   npx vite-node bench/busbra.ts [-- --minutes 3 --size 32 --arch tiny --seeds 1,2,3
 *        --lambda 0.5 --data ../shared/data/busbra --out /tmp/fedssl-busbra]
 *
 * For every seed: `fedssl-agent train-local` for a fixed wall-clock budget with λ = 0
 * (BYOL only) and with λ > 0 (BYOL + metadata head over pseudonymous patients), then
 * `fedssl-agent probe` on each encoder and on a random-init encoder of the same
 * architecture, with the official patient-wise folds of `5-fold-cv.csv`. The compiled CLI
 * runs as child processes (run `npm run build` first), one at a time. Prints a Markdown
 * table (mean ± std over seeds of the per-seed mean fold AUC, and min–max) and RESULT lines.
 *
 * Dataset: Gómez-Flores, Gregorio-Calas, Pereira, "BUS-BRA: A Breast Ultrasound Dataset
 * for Assessing Computer-aided Diagnosis Systems", Medical Physics 2023.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { writeBusbraManifest } from './experiments/data';

const root = path.join(__dirname, '..');
const cli = path.join(root, 'site-agent', 'dist', 'cli', 'agent-cli.js');

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '3' },
    size: { type: 'string', default: '32' },
    arch: { type: 'string', default: 'tiny' },
    seeds: { type: 'string', default: '1,2,3' },
    lambda: { type: 'string', default: '0.5' },
    data: { type: 'string', default: path.join(root, '..', 'shared', 'data', 'busbra') },
    out: { type: 'string', default: '/tmp/fedssl-busbra' },
  },
});
const seeds = values.seeds.split(',').map(Number);
const out = path.resolve(values.out);
mkdirSync(out, { recursive: true });

function agent(args: string[]): unknown {
  const t0 = performance.now();
  const res = spawnSync(process.execPath, [cli, ...args, '--json'], {
    encoding: 'utf8',
    env: { ...process.env, FEDSSL_LOG_LEVEL: 'warn' },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (res.status !== 0) {
    throw new Error(`fedssl-agent ${args[0]} failed (${res.status}): ${res.stderr}`);
  }
  process.stderr.write(`  ${args[0]} done in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  return JSON.parse(res.stdout);
}

interface ProbeJson {
  auc: { mean: number; std: number };
  accuracy: { mean: number; std: number };
}
interface TrainJson {
  steps: number;
  seconds: number;
  imagesPerSecond: number;
}

const manifest = writeBusbraManifest(values.data, out);
const images = path.join(values.data, 'images');
const common = ['--data', images, '--manifest', manifest];
const probeArgs = [...common, '--label-column', 'pathology', '--fold-column', 'fold'];
const arms = [
  { key: 'random', label: 'random init', lambda: null },
  { key: 'byol', label: 'BYOL (λ = 0)', lambda: 0 },
  { key: 'byol_meta', label: `BYOL + metadata (λ = ${values.lambda})`, lambda: Number(values.lambda) },
] as const;
const auc: Record<string, number[]> = { random: [], byol: [], byol_meta: [] };
const acc: Record<string, number[]> = { random: [], byol: [], byol_meta: [] };
const steps: Record<string, number[]> = { byol: [], byol_meta: [] };
const speed: number[] = [];

const started = new Date();
for (const seed of seeds) {
  for (const arm of arms) {
    process.stderr.write(`seed ${seed}, ${arm.label}\n`);
    let probe: ProbeJson;
    if (arm.lambda === null) {
      probe = agent([
        'probe',
        '--encoder',
        'random',
        '--arch',
        values.arch,
        '--size',
        values.size,
        '--seed',
        String(seed),
        ...probeArgs,
      ]) as ProbeJson;
    } else {
      const dir = path.join(out, `${arm.key}-seed${seed}`);
      const t = agent([
        'train-local',
        ...common,
        '--out',
        dir,
        '--fresh',
        '--minutes',
        values.minutes,
        '--arch',
        values.arch,
        '--size',
        values.size,
        '--lambda',
        String(arm.lambda),
        '--seed',
        String(seed),
      ]) as TrainJson;
      steps[arm.key]!.push(t.steps);
      speed.push(t.imagesPerSecond);
      probe = agent(['probe', '--encoder', dir, '--seed', String(seed), ...probeArgs]) as ProbeJson;
    }
    auc[arm.key]!.push(probe.auc.mean);
    acc[arm.key]!.push(probe.accuracy.mean);
    process.stderr.write(`  AUC ${probe.auc.mean.toFixed(3)}  acc ${probe.accuracy.mean.toFixed(3)}\n`);
  }
}

const stat = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
  return { m, sd, lo: Math.min(...xs), hi: Math.max(...xs) };
};
const f3 = (x: number) => x.toFixed(3);
console.log(
  `\nBUS-BRA linear probe, benign vs malignant, official 5 patient-wise folds; ${values.arch} encoder, ${values.size} px,` +
    ` ${values.minutes} min of train-local per arm and seed, seeds ${seeds.join(', ')};` +
    ` ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}; ${started.toISOString()}\n`,
);
console.log('| encoder | AUC mean ± std over seeds | AUC min–max | accuracy mean ± std | steps per seed |');
console.log('|---|---|---|---|---|');
for (const arm of arms) {
  const a = stat(auc[arm.key]!);
  const c = stat(acc[arm.key]!);
  const s = steps[arm.key];
  console.log(
    `| ${arm.label} | ${f3(a.m)} ± ${f3(a.sd)} | ${f3(a.lo)}–${f3(a.hi)} | ${f3(c.m)} ± ${f3(c.sd)} | ${
      s ? s.join(', ') : '–'
    } |`,
  );
}
const mean = (k: string) => stat(auc[k]!).m;
console.log(`\nper-seed AUC: ${JSON.stringify(auc)}`);
console.log(`training speed: ${speed.map((s) => s.toFixed(1)).join(', ')} images/s`);
console.log(`RESULT busbra_auc_random=${f3(mean('random'))} auc`);
console.log(`RESULT busbra_auc_byol=${f3(mean('byol'))} auc`);
console.log(`RESULT busbra_auc_byol_meta=${f3(mean('byol_meta'))} auc`);
console.log(
  `RESULT busbra_gain_byol_meta_over_random=${((mean('byol_meta') - mean('random')) * 100).toFixed(1)} auc_points`,
);
console.log(`RESULT busbra_minutes_per_arm=${values.minutes} min`);
