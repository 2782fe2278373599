/**
 * Aggregation bench: 20 synthetic ResNet-18-sized updates (encoder 11.2 M parameters plus
 * projector and predictor), sealed in real update envelopes on disk, aggregated by the
 * coordinator's `aggregateRound` exactly as the round engine does (decrypt → decode →
 * validate → strategy) with FedAvg and with the coordinate-wise median. Each strategy runs
 * in its own child process so that its peak RSS is its own.
 *
 *   npx vite-node bench/aggregation.ts [-- --sites 20]
 *
 * Prints a table and `RESULT` lines (time in seconds, peak RSS in MiB).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { fromBase64, generatePartyKeys, sealUpdate, toBase64 } from '@fedssl/shared/crypto';
import { resnet18ModelConfig, sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';
import type { UpdateHeader } from '@fedssl/shared/protocol';
import { aggregateRound } from '../coordinator/src/strategies/aggregate-round';
import type { UpdateSource } from '../coordinator/src/strategies';
import { decodeDelta, openEnvelopeFile } from '../coordinator/src/uploads/update-store';

// Batch norm (running statistics included), as measured in docs/benchmarks.md.
const MODEL: ModelConfig = { ...resnet18ModelConfig(224), norm: 'batch' };
const CHUNK = 1 << 20;
const mib = (kb: number): number => kb / 1024;

function zeros(): NamedTensors {
  return sharedParamSpecs(MODEL).map((s) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: new Float32Array(s.shape.reduce((a, b) => a * b, 1)),
  }));
}

/** xorshift32 → small deltas in [-0.01, 0.01): deterministic, cheap for 12 M values. */
function syntheticDelta(seed: number): NamedTensors {
  let x = (seed * 2654435761) >>> 0 || 1;
  return zeros().map((t) => {
    for (let i = 0; i < t.data.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      t.data[i] = ((x >>> 0) / 4294967296 - 0.5) * 0.02;
    }
    return t;
  });
}

function generate(dir: string, sites: number): void {
  const coordinator = generatePartyKeys();
  const site = generatePartyKeys();
  writeFileSync(join(dir, 'box.key'), toBase64(coordinator.box.secretKey));
  for (let k = 0; k < sites; k++) {
    const siteId = `site-${String(k).padStart(2, '0')}`;
    const sealed = sealUpdate({
      plaintext: encodeWeights(syntheticDelta(k + 1)),
      fields: {
        protocolVersion: 1,
        siteId,
        runId: 'bench',
        round: 1,
        taskId: `task-${k}`,
        taskNonce: toBase64(new Uint8Array(32)),
        baseModelHash: '0'.repeat(64),
        exampleCount: 100 + k,
        metrics: {},
        createdAt: new Date().toISOString(),
      },
      chunkSize: CHUNK,
      siteSigningSecretKey: site.signing.secretKey,
      coordinatorBoxPublicKey: coordinator.box.publicKey,
    });
    const fd = openSync(join(dir, `${siteId}.env`), 'w');
    for (const c of sealed.chunks) writeSync(fd, c);
    closeSync(fd);
    writeFileSync(join(dir, `${siteId}.header.json`), JSON.stringify(sealed.header));
  }
}

function child(strategy: string, dir: string, sites: number): void {
  const boxSecret = fromBase64(readFileSync(join(dir, 'box.key'), 'utf8'));
  const global = zeros();
  const params = global.reduce((n, t) => n + t.data.length, 0);
  const before = process.resourceUsage().maxRSS;
  const updates: UpdateSource[] = Array.from({ length: sites }, (_, k) => {
    const siteId = `site-${String(k).padStart(2, '0')}`;
    const header = JSON.parse(readFileSync(join(dir, `${siteId}.header.json`), 'utf8')) as UpdateHeader;
    return {
      siteId,
      exampleCount: header.exampleCount,
      readDelta: () =>
        decodeDelta(openEnvelopeFile(join(dir, `${siteId}.env`), header, boxSecret), MODEL, 1e6),
    };
  });
  const t0 = process.hrtime.bigint();
  const out = aggregateRound({
    strategy,
    dataDir: join(dir, `data-${strategy}`),
    runId: 'bench',
    round: 1,
    baseVersion: 'bench.r0',
    version: 'bench.r1',
    global,
    updates,
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const probe = out.weights[0]!.data[0]!;
  process.stdout.write(
    `${JSON.stringify({ strategy, params, seconds, baselineKb: before, peakKb: process.resourceUsage().maxRSS, probe })}\n`,
  );
}

function main(): void {
  const args = process.argv.slice(2);
  const sitesArg = args.indexOf('--sites');
  const sites = sitesArg >= 0 ? Number(args[sitesArg + 1]) : 20;
  if (args[0] === '--child') return child(args[1]!, args[2]!, sites);

  const dir = mkdtempSync(join(tmpdir(), 'fedssl-bench-agg-'));
  try {
    const t0 = Date.now();
    generate(dir, sites);
    const params = zeros().reduce((n, t) => n + t.data.length, 0);
    console.log(
      `${sites} sealed updates of ${(params / 1e6).toFixed(2)} M parameters (ResNet-18 encoder + projector + predictor) written in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    const rows: { strategy: string; seconds: number; baselineKb: number; peakKb: number }[] = [];
    for (const strategy of ['fedavg', 'median']) {
      const r = spawnSync(
        process.execPath,
        [process.argv[1]!, __filename, '--', '--child', strategy, dir, '--sites', String(sites)],
        { encoding: 'utf8', maxBuffer: 1 << 24 },
      );
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (r.status !== 0 || !line.startsWith('{')) throw new Error(`${strategy} child failed: ${r.stderr}`);
      rows.push(JSON.parse(line) as (typeof rows)[number]);
    }
    const modelMiB = (params * 4) / 2 ** 20;
    console.log(
      `\nmodel: ${modelMiB.toFixed(1)} MiB float32; ${sites} updates together: ${(modelMiB * sites).toFixed(0)} MiB`,
    );
    console.log('| strategy | time (s) | RSS before (MiB) | peak RSS (MiB) | peak − before (MiB) |');
    console.log('| -------- | -------: | ---------------: | -------------: | ------------------: |');
    for (const r of rows) {
      console.log(
        `| ${r.strategy} | ${r.seconds.toFixed(2)} | ${mib(r.baselineKb).toFixed(0)} | ${mib(r.peakKb).toFixed(0)} | ${mib(r.peakKb - r.baselineKb).toFixed(0)} |`,
      );
    }
    for (const r of rows) {
      console.log(`RESULT aggregation_${r.strategy}_time=${r.seconds.toFixed(2)} s`);
      console.log(`RESULT aggregation_${r.strategy}_peak_rss=${mib(r.peakKb).toFixed(0)} MiB`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
