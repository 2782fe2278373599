/**
 * Transfer: bytes per round per site for float32 / float16 / int8 updates, and their error on real deltas.
 *
 *   npm run bench -- transfer [--real tiny-32px[,resnet18-quarter-64px]] [--steps 8] [--images 256]
 *   npm run bench -- transfer --probe busbra|pneumonia [--epochs 1 --rounds 5 --seeds 1,2
 *        --encodings float32,float16,int8 --image-size 32 --resume --out DIR …]
 *
 * 1. Bytes: for each model preset, the update a site uploads per round (the sealed
 *    envelope's ciphertext chunks plus its signed header, as sent) in each encoding, and the
 *    global model it downloads (always float32).
 * 2. Error: real deltas — `trainRound` (BYOL + metadata head, the agent's own trainer) for
 *    `--steps` steps from the seeded initial model on the first `--images` images of
 *    PneumoniaMNIST (`/work/shared/data/medmnist/pneumoniamnist.npz`) — encoded in each
 *    dtype and decoded as the coordinator does; relative L2 error, worst element error, and
 *    cosine between the decoded and the exact delta.
 *
 * 3. `--probe <experiment>` (instead of 1 and 2): the probe AUC cost of each encoding — the
 *    same short federated run (FedAvg-BYOL + metadata, same seed, data and steps) once per
 *    encoding through the experiments' simulator, each global model linearly probed, and the
 *    bytes per round per site from the agents' ledgers (bench/experiments/encodings.ts; the
 *    other options are those of `experiments/<name>`).
 *
 * Prints tables, then `RESULT` lines.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { decodeWeights, encodeWeights, type DType, type NamedTensors } from '@fedssl/shared/codec';
import { generatePartyKeys } from '@fedssl/shared/crypto';
import { initSharedWeights, trainingConfigSchema } from '@fedssl/shared/model';
import { loadTrainingDataset } from '../site-agent/src/data/load-dataset';
import { selectBackend } from '../site-agent/src/train/backend';
import { trainRound } from '../site-agent/src/train/trainer';
import { subsetDataset } from './experiments/data';
import { parseEncodingCostArgs, runEncodingCost } from './experiments/encodings';
import { MODEL_PRESETS, parameterCountOf, sealDelta, syntheticDelta } from './lib/updates';

const argv = process.argv.slice(2).filter((a) => a !== '--');
/** `--probe <experiment>`: the encodings' probe AUC cost instead of the bytes and error tables. */
const probeMode = argv.includes('--probe');
const { values: opts } = parseArgs({
  args: probeMode ? [] : argv,
  options: {
    real: { type: 'string', default: 'tiny-32px' },
    steps: { type: 'string', default: '8' },
    images: { type: 'string', default: '256' },
    data: { type: 'string', default: '/work/shared/data/medmnist/pneumoniamnist.npz' },
  },
});
const ENCODINGS: DType[] = ['float32', 'float16', 'int8'];
const CHUNK = 1 << 20;
const results: string[] = [];
const result = (name: string, value: number | string, unit: string): void => {
  results.push(`RESULT ${name}=${value} ${unit}`);
};
const key = (s: string): string => s.replace(/-/g, '_');

function bytesPerRound(): void {
  const site = generatePartyKeys();
  const coordinator = generatePartyKeys();
  console.log('\n## Bytes per round per site (1 MiB chunks)\n');
  console.log(
    '| model | params | download (float32 model) | upload float32 | upload float16 | upload int8 |',
  );
  console.log(
    '| ----- | -----: | -----------------------: | -------------: | -------------: | ----------: |',
  );
  for (const [name, make] of Object.entries(MODEL_PRESETS)) {
    const model = make();
    const delta = syntheticDelta(model, 1);
    const download = encodeWeights(initSharedWeights(model, 1)).length;
    const up: Record<string, number> = {};
    for (const encoding of ENCODINGS) {
      const { sealed } = sealDelta(delta, {
        encoding,
        site,
        siteId: 'site-a',
        coordinatorBoxPublicKey: coordinator.box.publicKey,
        chunkSize: CHUNK,
      });
      const header = JSON.stringify({ header: sealed.header, signature: sealed.signature }).length;
      up[encoding] = sealed.chunks.reduce((n, c) => n + c.length, 0) + header;
    }
    const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
    const vs = (b: number) => `${mb(b)} (${((100 * b) / up.float32!).toFixed(1)} %)`;
    console.log(
      `| ${name} | ${(parameterCountOf(model) / 1e6).toFixed(2)} M | ${mb(download)} | ${mb(up.float32!)} | ${vs(up.float16!)} | ${vs(up.int8!)} |`,
    );
    result(`transfer_${key(name)}_download_bytes`, download, 'B');
    for (const e of ENCODINGS) result(`transfer_${key(name)}_upload_${e}_bytes`, up[e]!, 'B');
    result(`transfer_${key(name)}_int8_over_float32`, (up.int8! / up.float32!).toFixed(3), 'x');
    result(`transfer_${key(name)}_float16_over_float32`, (up.float16! / up.float32!).toFixed(3), 'x');
  }
}

interface ErrorRow {
  relL2: number;
  maxAbs: number;
  cosine: number;
}

function compare(exact: NamedTensors, decoded: NamedTensors): ErrorRow {
  let dd = 0;
  let ee = 0;
  let xx = 0;
  let yy = 0;
  let xy = 0;
  let maxAbs = 0;
  exact.forEach((t, i) => {
    const y = decoded[i]!.data;
    for (let j = 0; j < t.data.length; j++) {
      const a = t.data[j]!;
      const b = y[j]!;
      const d = a - b;
      dd += d * d;
      xx += a * a;
      yy += b * b;
      xy += a * b;
      if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
    }
  });
  ee = Math.sqrt(xx);
  return { relL2: Math.sqrt(dd) / ee, maxAbs, cosine: xy / Math.sqrt(xx * yy) };
}

async function realDeltaErrors(): Promise<void> {
  const presets = opts.real.split(',').filter(Boolean);
  if (presets.length === 0) return;
  if (!existsSync(opts.data)) {
    console.log(`\n(real deltas skipped: ${opts.data} not found)`);
    return;
  }
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const backend = await selectBackend(logger, 'auto');
  const steps = Number(opts.steps);
  console.log(
    `\n## Error of each encoding on real deltas (${steps} BYOL + metadata steps, batch 32, ${opts.images} PneumoniaMNIST images, ${backend.name})\n`,
  );
  console.log('| model | ‖Δ‖ | encoding | relative L2 error | worst element error | cosine(Δ, decoded) |');
  console.log('| ----- | --: | -------- | ----------------: | ------------------: | -----------------: |');
  for (const name of presets) {
    const model = MODEL_PRESETS[name]!();
    const { dataset } = await loadTrainingDataset({
      path: opts.data,
      split: 'train',
      imageSize: model.inputSize,
      secret: new Uint8Array(randomBytes(32)),
    });
    const ds = subsetDataset(
      dataset,
      Array.from({ length: Math.min(Number(opts.images), dataset.count) }, (_, i) => i),
    );
    const t0 = Date.now();
    const out = await trainRound({
      model,
      training: trainingConfigSchema.parse({ maxStepsPerRound: steps, batchSize: 32, learningRate: 1e-3 }),
      globalWeights: initSharedWeights(model, 1),
      dataset: ds,
      seed: 1,
      logger,
      workers: 1,
    });
    const seconds = (Date.now() - t0) / 1000;
    const delta = out.delta;
    const norm = Math.sqrt(delta.reduce((s, t) => s + t.data.reduce((a, v) => a + v * v, 0), 0));
    for (const e of ENCODINGS) {
      const decoded = decodeWeights(encodeWeights(delta, { dtype: e })).tensors;
      const r = compare(delta, decoded);
      console.log(
        `| ${name} | ${norm.toPrecision(3)} | ${e} | ${r.relL2.toExponential(2)} | ${r.maxAbs.toExponential(2)} | ${r.cosine.toFixed(7)} |`,
      );
      result(`transfer_error_${key(name)}_${e}_rel_l2`, r.relL2.toExponential(3), 'ratio');
      result(`transfer_error_${key(name)}_${e}_cosine`, r.cosine.toFixed(7), 'ratio');
    }
    console.log(`| (${name}: ${steps} steps trained in ${seconds.toFixed(0)} s) | | | | | |`);
  }
}

async function main(): Promise<void> {
  if (probeMode) {
    const a = parseEncodingCostArgs(argv);
    await runEncodingCost(a.def, a.options, a.encodings);
    return;
  }
  bytesPerRound();
  await realDeltaErrors();
  console.log('');
  for (const l of results) console.log(l);
}

void main();
