/**
 * Envelope and ingest: seal/open MB/s by chunk size, SHA-512, whole-update ingest MB/s per core.
 *
 *   npm run bench -- envelope [--mib 32] [--reps 3] [--models resnet18-quarter-64px,resnet18-224px]
 *        [--parts envelope,sha512,ingest] [--strategy fedavg,fedavgm,fedadam] [--fast-only]
 *
 * 1. `sealUpdate` / `openUpdate` (the whole envelope: chunk secretbox, SHA-512 of the
 *    ciphertext, key box, Ed25519 signature and verify) over `--mib` MiB, chunk sizes 64 KiB …
 *    4 MiB, with the tweetnacl chunk cipher and with the bulk backend (sodium-native).
 * 2. SHA-512: tweetnacl `nacl.hash` vs node:crypto (`sha512Hex`, what the envelope uses).
 * 3. Ingest of one realistic update through the coordinator's own functions, in the order
 *    `UploadService` and the round engine run them: verify the signed header
 *    (`verifyUpdateHeader`), receive the chunks into the part file (`UpdateStore.writeChunk`,
 *    fsync per chunk, as `UploadService.chunk`), open (`UpdateStore.openEnvelope`), decode and
 *    validate (`UpdateStore.decodeOpened`: names/shapes, finiteness, norm) and keep it opened
 *    (`UpdateStore.opened`), aggregate taking it from there (`readAcceptedDelta`, then the
 *    strategy's `aggregate`: weighted-mean fold plus its server step, with the store's pool as
 *    `buffers` and the previous row's server state, timed over a round of 4 updates and divided
 *    by 4), giving its plaintext buffer back (`UpdateStore.recycle`). `--strategy` lists the
 *    strategies (default options) to compare; each has its own store, and they take turns
 *    update by update, so load changes hit them alike. Loading and saving the server state
 *    file (once per round, `aggregateRound`) is not counted. `--fast-only` skips the
 *    tweetnacl ingest row.
 *    One store per row, as one coordinator: the first update ("cold") is opened into a new
 *    buffer, the measured ones into the buffer the previous fold gave back, as every round
 *    after a coordinator's first. MB/s is plaintext (encoded update) bytes ÷ CPU seconds of
 *    the process (user + system), i.e. per core; wall seconds are printed too. The bulk
 *    tweetnacl row also signs with tweetnacl; the fast row uses node:crypto signatures. Also
 *    printed: "re-opened" (a second open + decode, as aggregation after a coordinator restart
 *    does) and "before" (tweetnacl verify and two opens: the coordinator before this path).
 *
 * All MB/s figures are per core: bytes ÷ CPU seconds (user + system) of this process, so
 * that other work on a shared machine does not count against them. Prints tables, then
 * `RESULT` lines.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import nacl from 'tweetnacl';
import type { NamedTensors } from '@fedssl/shared/codec';
import {
  generatePartyKeys,
  openUpdate,
  setBulkBackend,
  setSignatureBackend,
  sha512Hex,
  verifyUpdateHeader,
  type BulkBackendName,
  type SignatureBackendName,
} from '@fedssl/shared/crypto';
import { StrategyStateStore } from '../coordinator/src/strategies/aggregate-round';
import { createStrategy, STRATEGY_NAMES } from '../coordinator/src/strategies/index';
import { UpdateStore } from '../coordinator/src/uploads/update-store';
import {
  MODEL_PRESETS,
  median,
  parameterCountOf,
  sealDelta,
  sealPlaintext,
  syntheticDelta,
  timed,
} from './lib/updates';

const { values: opts } = parseArgs({
  options: {
    mib: { type: 'string', default: '32' },
    reps: { type: 'string', default: '3' },
    models: { type: 'string', default: 'resnet18-quarter-64px,resnet18-224px' },
    parts: { type: 'string', default: 'envelope,sha512,ingest' },
    strategy: { type: 'string', default: 'fedavg' },
    'fast-only': { type: 'boolean', default: false },
  },
});
const FOLD_STRATEGIES = ['fedavg', 'fedavgm', 'fedadam'];
const STRATEGIES = opts.strategy.split(',');
for (const s of STRATEGIES) {
  // The ingest folds deltas as they arrive; median and trimmed mean spill to disk instead.
  if (!FOLD_STRATEGIES.includes(s)) {
    throw new Error(
      `--strategy ${s}: expected a comma-separated list of ${FOLD_STRATEGIES.join(', ')} (of ${STRATEGY_NAMES.join(', ')})`,
    );
  }
}
const MIB = Number(opts.mib);
const REPS = Number(opts.reps);
const CHUNKS = [64 << 10, 256 << 10, 1 << 20, 4 << 20];
const MB = 1e6;
const FOLD_SITES = 4;

const site = generatePartyKeys();
const coordinator = generatePartyKeys();
const results: string[] = [];
const result = (name: string, value: number, unit: string, digits = 1): void => {
  results.push(`RESULT ${name}=${value.toFixed(digits)} ${unit}`);
};
const chunkLabel = (c: number): string => (c >= 1 << 20 ? `${c >> 20}MiB` : `${c >> 10}KiB`);

function backends(): BulkBackendName[] {
  const fast = setBulkBackend('auto');
  return fast === 'tweetnacl' ? ['tweetnacl'] : ['tweetnacl', fast];
}

/** Raw bytes sealed and opened as an envelope (the plaintext content does not matter). */
function envelopeThroughput(): void {
  const plaintext = new Uint8Array(MIB << 20);
  for (let i = 0; i < plaintext.length; i += 4096) plaintext[i] = i & 0xff;
  const bytes = plaintext.length;
  console.log(`\n## Envelope seal/open, ${MIB} MiB, MB/s per core (CPU time; median of ${REPS})\n`);
  console.log('| chunk | backend | seal MB/s | open MB/s |');
  console.log('| ----- | ------- | --------: | --------: |');
  const names = backends();
  const base: Record<number, { seal: number; open: number }> = {};
  for (const chunk of CHUNKS) {
    for (const name of names) {
      setBulkBackend(name);
      const seals: number[] = [];
      const opens: number[] = [];
      // tweetnacl is ~15× slower: fewer repetitions keep the bench short.
      const reps = name === 'tweetnacl' ? Math.min(REPS, 2) : REPS;
      for (let r = 0; r < reps; r++) {
        const s = timed(() => sealRaw(plaintext, chunk));
        seals.push(bytes / MB / s.cpu);
        const o = timed(() =>
          openUpdate({
            ...s.value,
            siteSigningPublicKey: site.signing.publicKey,
            coordinatorBoxSecretKey: coordinator.box.secretKey,
          }),
        );
        if (o.value.length !== bytes) throw new Error('envelope did not round-trip');
        opens.push(bytes / MB / o.cpu);
      }
      const seal = median(seals);
      const open = median(opens);
      console.log(`| ${chunkLabel(chunk)} | ${name} | ${seal.toFixed(0)} | ${open.toFixed(0)} |`);
      const key = `envelope_${name.replace('-', '_')}_${chunkLabel(chunk)}`;
      result(`${key}_seal`, seal, 'MB/s', 0);
      result(`${key}_open`, open, 'MB/s', 0);
      if (name === 'tweetnacl') base[chunk] = { seal, open };
      else {
        result(`envelope_open_speedup_${chunkLabel(chunk)}`, open / base[chunk]!.open, 'x', 1);
      }
    }
  }
  setBulkBackend('auto');
}

function sealRaw(plaintext: Uint8Array, chunkSize: number) {
  // The envelope does not look inside its plaintext: raw bytes measure it alone.
  return sealPlaintext(plaintext, {
    site,
    siteId: 'site-a',
    coordinatorBoxPublicKey: coordinator.box.publicKey,
    chunkSize,
  });
}

function sha512Throughput(): void {
  const data = new Uint8Array(MIB << 20).fill(7);
  const nacls: number[] = [];
  const nodes: number[] = [];
  for (let r = 0; r < REPS; r++) {
    nacls.push(data.length / MB / timed(() => nacl.hash(data)).cpu);
    nodes.push(data.length / MB / timed(() => sha512Hex(data)).cpu);
  }
  const a = median(nacls);
  const b = median(nodes);
  console.log(`\n## SHA-512, ${MIB} MiB, MB/s per core (CPU time)\n`);
  console.log('| implementation | MB/s |');
  console.log('| -------------- | ---: |');
  console.log(`| tweetnacl nacl.hash | ${a.toFixed(0)} |`);
  console.log(`| node:crypto (used) | ${b.toFixed(0)} |`);
  result('sha512_tweetnacl', a, 'MB/s', 0);
  result('sha512_node_crypto', b, 'MB/s', 0);
  result('sha512_speedup', b / a, 'x', 1);
}

interface IngestRow {
  model: string;
  backend: string;
  strategy: string;
  signatures: SignatureBackendName;
  params: number;
  bytes: number;
  /** CPU seconds per stage. */
  stages: Record<string, number>;
  /** CPU and wall seconds of the coordinator's normal path (verify, open once, decode, fold). */
  cpu: number;
  wall: number;
}

/**
 * One update through the coordinator's ingest, as `UploadService.commit` and the round engine
 * run it: verify, receive, open (`UpdateStore.openEnvelope`), decode + validate, kept in
 * `UpdateStore.opened`, folded at aggregation from there (`readAcceptedDelta`). Also timed,
 * for the figures beside it: the same open + decode again (what aggregation does when memory
 * no longer holds the update, and what every aggregation did before) and, on the fast row,
 * the verify with tweetnacl signatures (before).
 */
/** One coordinator in the ingest rows: its update store and the server state of its last round. */
interface Coordinator {
  store: UpdateStore;
  strategy: string;
  state: NamedTensors | null;
  states: StrategyStateStore;
  rounds: number;
}

function ingestOnce(modelName: string, backend: BulkBackendName, coord: Coordinator): IngestRow {
  const { store } = coord;
  const model = MODEL_PRESETS[modelName]!();
  setBulkBackend(backend);
  const signatures = setSignatureBackend(backend === 'tweetnacl' ? 'tweetnacl' : 'auto');
  const delta = syntheticDelta(model, 7);
  const { sealed, plaintextBytes } = sealDelta(delta, {
    site,
    siteId: 'site-a',
    coordinatorBoxPublicKey: coordinator.box.publicKey,
    chunkSize: 1 << 20,
  });
  const uploadId = store.uploadIdFor(`task-${modelName}-${backend}-${coord.strategy}`, sealed.signature);
  const part = store.partPath(uploadId);
  const global = delta.map((t) => ({ name: t.name, shape: t.shape, data: new Float32Array(t.data.length) }));
  const stages: Record<string, { wall: number; cpu: number }> = {};
  const stage = <T>(name: string, fn: () => T): T => {
    const t = timed(fn);
    stages[name] = { wall: t.wall, cpu: t.cpu };
    return t.value;
  };
  const verify = () => verifyUpdateHeader(sealed.header, sealed.signature, site.signing.publicKey);
  stage('verify', verify);
  if (signatures !== 'tweetnacl') {
    setSignatureBackend('tweetnacl');
    stage('verify (tweetnacl)', verify);
    setSignatureBackend('auto');
  }
  stage('receive', () => {
    store.openPart(uploadId, sealed.header);
    sealed.chunks.forEach((c, i) => store.writeChunk(uploadId, sealed.header, i, c));
  });
  const key = () => coordinator.box.secretKey;
  const plain = stage('open', () => store.openEnvelope(part, sealed.header, key()));
  const refs = Array.from({ length: FOLD_SITES }, (_, k) => ({
    id: `upd-${k}`,
    envelopePath: part,
    headerPath: '(not read: the update is held)',
  }));
  stage('decode+validate', () => {
    const tensors = store.decodeOpened(plain, model, 1e6);
    store.opened.put(refs[0]!.id, 'bench', 1, { kind: 'delta', tensors });
    return tensors;
  });
  // A round folds several updates into sums it allocates once: fold FOLD_SITES copies (each
  // taken from memory as aggregation does) and count a FOLD_SITES-th of the time.
  const held = store.opened.take(refs[0]!.id)!;
  for (const r of refs) store.opened.put(r.id, 'bench', 1, held);
  const strategy = createStrategy(coord.strategy);
  const scratchDir = mkdtempSync(join(store.dataDir, 'agg-'));
  const out = stage('fold', () =>
    strategy.aggregate({
      global,
      state: coord.state,
      scratchDir,
      // As `aggregateRound`: the float64 sums are borrowed from the same pool and given back.
      buffers: store.opened.buffers,
      updates: refs.map((r, k) => {
        // As the round engine wires it: once folded, the plaintext buffer goes back to the
        // store's pool for the next update opened.
        let d: NamedTensors | undefined;
        return {
          siteId: `site-${k}`,
          exampleCount: 100,
          readDelta: () => (d = store.readAcceptedDelta(r, key, model, 1e6)),
          release: () => d && store.recycle([d]),
        };
      }),
    }),
  );
  rmSync(scratchDir, { recursive: true });
  // As `aggregateRound` then: the new state saved (temp file, fsync, rename), both states given
  // back to the pool, and the next round (the next row) loads it into pooled memory. Timed
  // apart and not counted (once per round, and mostly disk), shown per update like the fold.
  stage('state save+load', () => {
    if (coord.state) store.opened.buffers.recycle(coord.state.map((t) => t.data));
    coord.state = null;
    if (!out.state) return;
    const version = `bench.r${++coord.rounds}`;
    coord.states.save(version, out.state);
    store.opened.buffers.recycle(out.state.map((t) => t.data));
    coord.state = coord.states.load(version, store.opened.buffers);
  });
  stages['state save+load']!.cpu /= FOLD_SITES;
  stages['state save+load']!.wall /= FOLD_SITES;
  if (store.opened.size !== 0) throw new Error('the fold did not take every held update');
  stages.fold!.cpu /= FOLD_SITES;
  stages.fold!.wall /= FOLD_SITES;
  // Not on the normal path any more: the update opened and decoded a second time.
  stage('re-open', () => {
    const again = store.decodeOpened(store.openEnvelope(part, sealed.header, key()), model, 1e6);
    store.recycle([again]);
  });
  rmSync(part);
  // The goal counts verify, open, decode, validate and fold; receiving (disk writes and
  // fsync per chunk) is shown but not counted.
  const counted = ['verify', 'open', 'decode+validate', 'fold'].map((k) => stages[k]!);
  return {
    model: modelName,
    backend,
    strategy: coord.strategy,
    signatures,
    params: parameterCountOf(model),
    bytes: plaintextBytes,
    stages: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, v.cpu])),
    cpu: counted.reduce((s, x) => s + x.cpu, 0),
    wall: counted.reduce((s, x) => s + x.wall, 0),
  };
}

function ingest(): void {
  const dir = mkdtempSync(join(tmpdir(), 'fedssl-bench-env-'));
  try {
    const models = opts.models.split(',');
    console.log(`\n## Ingest of one update (float32, 1 MiB chunks), median of ${REPS} after a cold one\n`);
    console.log(
      '| model | params | MB | bulk | signatures | strategy | verify | receive | open | decode+validate | fold+step | state save+load | CPU s | MB/s per core | cold MB/s per core | wall MB/s | re-opened MB/s per core | before MB/s per core |',
    );
    console.log(
      '| --- | --: | --: | --- | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |',
    );
    const sideBySide: string[] = [];
    for (const m of models) {
      const perBackend: Record<string, number> = {};
      let before = 0;
      // --fast-only: no tweetnacl ingest row (~15× slower, and the same for every strategy).
      for (const b of backends().filter((x) => !opts['fast-only'] || x !== 'tweetnacl')) {
        // One store per model, backend and strategy, as one coordinator: the first update is
        // opened into a new buffer (cold: a coordinator's first round), the next ones into the
        // buffer the previous fold gave back (every later round). The strategies take turns.
        const coords: Coordinator[] = STRATEGIES.map((strategy) => ({
          store: new UpdateStore(dir),
          strategy,
          state: null,
          states: new StrategyStateStore(dir, `bench-${m}-${b}-${strategy}`),
          rounds: 0,
        }));
        const colds = coords.map((c) => ingestOnce(m, b, c));
        const runs = coords.map((): IngestRow[] => []);
        for (let r = 0; r < REPS; r++) coords.forEach((c, k) => runs[k]!.push(ingestOnce(m, b, c)));
        const byStrategy: Record<string, { mbps: number; fold: number; withState: number }> = {};
        coords.forEach((coord, k) => {
          const cold = colds[k]!;
          const pick = runs[k]!.sort((x, y) => x.cpu - y.cpu)[runs[k]!.length >> 1]!;
          const s = pick.stages;
          const mbps = pick.bytes / MB / pick.cpu;
          const coldMbps = cold.bytes / MB / cold.cpu;
          const wall = pick.bytes / MB / pick.wall;
          // After a restart (or over the memory budget) aggregation opens and decodes once more.
          const reopened = pick.bytes / MB / (pick.cpu + s['re-open']!);
          // Before this change: tweetnacl signatures, and the update opened at commit and again at aggregation.
          const beforeCpu = pick.cpu - s.verify! + (s['verify (tweetnacl)'] ?? s.verify!) + s['re-open']!;
          const ms = (x: number | undefined) => (x === undefined ? '' : (x * 1000).toFixed(0));
          const verify =
            s['verify (tweetnacl)'] === undefined
              ? ms(s.verify)
              : `${ms(s.verify)} (tweetnacl ${ms(s['verify (tweetnacl)'])})`;
          const beforeCell = b === 'tweetnacl' ? '' : (pick.bytes / MB / beforeCpu).toFixed(0);
          console.log(
            `| ${m} | ${(pick.params / 1e6).toFixed(2)} M | ${(pick.bytes / MB).toFixed(1)} | ${b} | ${pick.signatures} | ${coord.strategy} | ${verify} | ${ms(s.receive)} | ${ms(s.open)} | ${ms(s['decode+validate'])} | ${ms(s.fold)} | ${ms(s['state save+load'])} | ${pick.cpu.toFixed(3)} | ${mbps.toFixed(0)} | ${coldMbps.toFixed(0)} | ${wall.toFixed(0)} | ${reopened.toFixed(0)} | ${beforeCell} |`,
          );
          // FedAvg keeps the names these figures always had; other strategies add their name.
          const tag = coord.strategy === 'fedavg' ? '' : `_${coord.strategy}`;
          const key = `ingest_${m.replace(/-/g, '_')}_${b.replace('-', '_')}${tag}`;
          result(`${key}_per_core`, mbps, 'MB/s', 0);
          result(`${key}_cold_per_core`, coldMbps, 'MB/s', 0);
          // As run: the normal path opens each update once (it is the per-core figure now).
          result(`${key}_as_run_per_core`, mbps, 'MB/s', 0);
          result(`${key}_reopened_per_core`, reopened, 'MB/s', 0);
          const withState = pick.bytes / MB / (pick.cpu + s['state save+load']!);
          result(`${key}_with_state_io_per_core`, withState, 'MB/s', 0);
          byStrategy[coord.strategy] = { mbps, fold: s.fold!, withState };
          if (coord.strategy !== 'fedavg') return;
          perBackend[b] = mbps;
          if (b !== 'tweetnacl') before = pick.bytes / MB / beforeCpu;
        });
        const fedavg = byStrategy.fedavg;
        sideBySide.push(
          `| ${m} | ${b} | ${STRATEGIES.map((n) => `${byStrategy[n]!.mbps.toFixed(0)} (${(byStrategy[n]!.fold * 1000).toFixed(1)}) / ${byStrategy[n]!.withState.toFixed(0)}`).join(' | ')} |`,
        );
        if (fedavg) {
          for (const n of STRATEGIES.filter((x) => x !== 'fedavg')) {
            const key = `ingest_${m.replace(/-/g, '_')}_${b.replace('-', '_')}_${n}_vs_fedavg`;
            result(key, byStrategy[n]!.mbps / fedavg.mbps, 'x', 3);
          }
        }
      }
      const fast = Object.keys(perBackend).find((k) => k !== 'tweetnacl');
      const label = m.replace(/-/g, '_');
      if (fast && perBackend.tweetnacl) {
        result(`ingest_${label}_speedup`, perBackend[fast]! / perBackend.tweetnacl!, 'x', 1);
        result(`ingest_${label}_before_per_core`, before, 'MB/s', 0);
        result(`ingest_${label}_speedup_over_before`, perBackend[fast]! / before, 'x', 2);
      }
    }
    console.log(
      '\n(stage columns are CPU milliseconds; "CPU s" and MB/s count verify, open, decode+validate and fold+step, the normal path, which opens each update once, into the plaintext buffer the previous fold gave back; "fold+step" is the strategy\'s whole aggregate of a 4-update round divided by 4; "state save+load" (not counted) is writing the server state file and reading it back for the next round, divided by 4; "cold" is the first update of the row, opened into a new buffer as in a coordinator\'s first round; "re-opened" adds a second open + decode, as aggregation after a restart does; "before" is the coordinator before it kept opened updates and verified with node:crypto: tweetnacl signatures and two opens, measured in the same run)',
    );
    if (STRATEGIES.length > 1) {
      console.log(
        `\n## Ingest per strategy, MB/s per core (fold+step CPU ms per update) / MB/s per core with the state save+load, interleaved\n`,
      );
      console.log(`| model | bulk | ${STRATEGIES.join(' | ')} |`);
      console.log(`| --- | --- | ${STRATEGIES.map(() => '--:').join(' | ')} |`);
      for (const line of sideBySide) console.log(line);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    setBulkBackend('auto');
    setSignatureBackend('auto');
  }
}

function main(): void {
  const fast = setBulkBackend('auto');
  const signatures = setSignatureBackend('auto');
  console.log(
    `bulk backend: ${fast}; signatures: ${signatures}; node ${process.version}; ${MIB} MiB for raw figures; ${REPS} repetitions`,
  );
  const parts = opts.parts.split(',');
  if (parts.includes('envelope')) envelopeThroughput();
  if (parts.includes('sha512')) sha512Throughput();
  if (parts.includes('ingest')) ingest();
  console.log('');
  for (const l of results) console.log(l);
}

main();
