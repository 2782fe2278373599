#!/usr/bin/env node
/**
 * `npm run demo`: a three-hospital consortium on this machine. Starts a coordinator on the
 * embedded default (SQLite + a data folder), generates synthetic scans for each site (or uses
 * folders you name), enrolls three site agents as separate processes with their own keys, runs
 * a federated BYOL + metadata pretraining run, and prints what happened round by round.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  consortiumPaths,
  enrollAgent,
  startAgent,
  startCoordinator,
  waitForRun,
  type AgentHandle,
} from './consortium';
import { generateSyntheticScans } from './synthetic-scans';
import type { ManagedProcess } from './processes';

const SITE_NAMES = ['st-mary', 'riverside', 'northgate', 'lakeshore', 'hillcrest'];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string', default: path.resolve('.fedssl-demo') },
      sites: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      'site-data': { type: 'string' },
      'steps-per-round': { type: 'string', default: '6' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(`usage: npm run demo -- [--dir DIR] [--sites N] [--rounds R] [--steps-per-round K]
                        [--site-data PATH1,PATH2,...]   (folders of PNG/JPEG + optional manifest.csv, one per site)`);
    return;
  }
  const siteCount = Number(values.sites);
  const rounds = Number(values.rounds);
  const steps = Number(values['steps-per-round']);
  if (!Number.isInteger(siteCount) || siteCount < 2 || siteCount > SITE_NAMES.length)
    throw new Error(`--sites must be an integer 2–${SITE_NAMES.length}, got ${values.sites}`);
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);
  const realData = values['site-data']?.split(',').map((p) => path.resolve(p));
  if (realData && realData.length !== siteCount)
    throw new Error(`--site-data names ${realData.length} folders for ${siteCount} sites`);

  const paths = consortiumPaths(path.resolve(values.dir));
  await rm(paths.root, { recursive: true, force: true });
  const names = SITE_NAMES.slice(0, siteCount);
  const processes: ManagedProcess[] = [];
  const stopAll = async () => {
    await Promise.all(processes.map((p) => p.stop()));
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));

  try {
    console.log(`fedssl demo — ${siteCount} sites, ${rounds} rounds, everything under ${paths.root}\n`);
    const dataPaths: string[] = [];
    for (const [i, name] of names.entries()) {
      if (realData) {
        dataPaths.push(realData[i]!);
        continue;
      }
      const out = paths.siteData(name);
      const made = await generateSyntheticScans({
        outDir: out,
        patients: 10 + 4 * i,
        imagesPerPatient: 3,
        size: 64,
        seed: 1000 + i,
        modality: i % 2 === 0 ? 'ultrasound' : 'xray',
      });
      console.log(`  ${name}: generated ${made.images} synthetic scans of ${made.patients} patients`);
      dataPaths.push(out);
    }

    const coordinator = await startCoordinator({ dataDir: paths.coordinatorData });
    processes.push(coordinator.process);
    console.log(`\ncoordinator listening on ${coordinator.url} (SQLite + files in ${paths.coordinatorData})`);

    const agents: AgentHandle[] = [];
    for (const [i, name] of names.entries()) {
      const agent = await enrollAgent({
        coordinator,
        name,
        home: paths.siteHome(name),
        dataPath: dataPaths[i]!,
      });
      agents.push(agent);
      console.log(`  enrolled ${name} as ${agent.siteId}`);
    }
    for (const agent of agents) processes.push(await startAgent(agent));
    console.log(`  ${agents.length} site agents connected\n`);

    const run = await coordinator.api.createRun({
      name: 'demo-byol-metadata',
      rounds,
      minSites: siteCount,
      roundDeadlineSeconds: 600,
      strategy: 'fedavg',
      seed: 7,
      model: {
        arch: 'tiny',
        inputSize: 32,
        widths: [8, 16, 32],
        projectorHidden: 64,
        projectionDim: 32,
        metadataHidden: 32,
      },
      training: {
        localEpochs: 1,
        maxStepsPerRound: steps,
        batchSize: 16,
        learningRate: 0.001,
        metadataWeight: 0.5,
      },
    });
    await coordinator.api.startRun(run.id);
    console.log(`run ${run.id} started: BYOL + metadata head (λ = 0.5), tiny ResNet, 32 px views, FedAvg\n`);
    const siteName = new Map(agents.map((a) => [a.siteId, a.name]));
    const done = await waitForRun(coordinator.api, run.id, {
      timeoutMs: 30 * 60_000,
      onRound: (round) => {
        console.log(`round ${round.round}: published ${round.modelVersion}`);
        for (const p of round.participants) {
          const loss = p.metrics?.loss;
          console.log(
            `  ${(siteName.get(p.siteId) ?? p.siteId).padEnd(10)} ${p.state.padEnd(9)} examples=${String(p.exampleCount ?? '-').padEnd(4)}` +
              ` loss=${loss === undefined ? '-' : loss.toFixed(4)}${p.metrics?.metadataLoss !== undefined ? ` (byol ${p.metrics.byolLoss?.toFixed(4)}, metadata ${p.metrics.metadataLoss.toFixed(4)})` : ''}` +
              (p.reason ? ` reason=${p.reason}` : ''),
          );
        }
      },
    });
    if (done.state !== 'completed') throw new Error(`run ended ${done.state}`);
    const last = done.rounds.filter((r) => r.state === 'published').at(-1);
    const version = done.latestModelVersion ?? last?.modelVersion;
    console.log(
      `\npublished global model ${version} sha256=${last?.modelSha256} at ${path.join(paths.coordinatorData, 'models', String(version))}`,
    );
  } finally {
    await stopAll();
  }
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
