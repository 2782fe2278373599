import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pneumonia } from '../../bench/experiments/definitions';
import { parseExperimentArgs, runExperiment } from '../../bench/experiments/experiment';
import { slug } from '../../bench/experiments/report';
import { decodeWeights } from '@fedssl/shared/codec';
import { initSharedWeights } from '@fedssl/shared/model';
import { PNEUMONIA_NPZ, slicePneumoniaNpz } from '../support/pneumonia-slice';

/**
 * The experiment pipeline end to end in `--smoke` mode on a small slice of the real
 * PneumoniaMNIST file: every arm runs, the table has the row names, RESULT lines
 * follow the table, the plots are PNGs, and the federated arms went through the round engine
 * (rounds published, one accepted sealed update per site and round, FedEMA's μ applied).
 */

const dir = mkdtempSync(join(tmpdir(), 'fedssl-exp-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('federated experiments, smoke mode', () => {
  it.runIf(existsSync(PNEUMONIA_NPZ))(
    'runs every arm through the real federation code and reports the table, RESULT lines and plots',
    async () => {
      const data = slicePneumoniaNpz(100, dir);
      const o = parseExperimentArgs(pneumonia, ['--smoke', '--out', join(dir, 'out'), '--data', data]);
      expect(o.rounds).toBe(2);
      const r = await runExperiment(pneumonia, o);

      const labels = r.rows.map((x) => x.label);
      expect(labels).toEqual([
        'random init',
        'local-only site 1',
        'local-only site 2',
        'local-only site 3',
        'local-only site 4',
        'centralized',
        'fedavg',
        'fedavg + metadata',
        'fedema + metadata',
        'fedavg + metadata, + blur + jitter',
        'centralized, + blur + jitter',
        'local-only site 1, + blur + jitter',
        'local-only site 2, + blur + jitter',
        'local-only site 3, + blur + jitter',
        'local-only site 4, + blur + jitter',
      ]);
      for (const row of r.rows) {
        expect(r.table).toContain(`| ${row.label} |`);
        expect(row.auc.n).toBe(5); // one seed × five folds
        expect(row.auc.mean).toBeGreaterThan(0);
        expect(row.auc.mean).toBeLessThanOrEqual(1);
      }
      expect(r.resultLines.length).toBeGreaterThan(labels.length);
      for (const l of r.resultLines) expect(l).toMatch(/^RESULT pneumonia_[a-z0-9_]+=-?[0-9.]+ [a-z_]+$/);
      expect(r.resultLines).toContain(
        `RESULT pneumonia_auc_fedavg_metadata=${r.rows.find((x) => x.label === 'fedavg + metadata')!.auc.mean.toFixed(3)} auc`,
      );

      // Same compute for every arm: centralized = Σ federated steps = Σ local-only steps.
      const steps = (arm: string) => r.results.filter((x) => x.arm === arm).reduce((n, x) => n + x.steps, 0);
      expect(steps('centralized')).toBeGreaterThan(0);
      expect(steps('fedavg')).toBe(steps('centralized'));
      expect(steps('fedemaMeta')).toBe(steps('centralized'));
      expect(steps('local')).toBe(steps('centralized'));
      expect(steps('centralizedAug')).toBe(steps('centralized'));
      expect(steps('localAug')).toBe(steps('centralized'));

      // Federated arms went through the round engine: 2 published rounds, 4 accepted updates each.
      const fed = r.results.filter((x) => x.federation);
      expect(fed.map((x) => x.arm)).toEqual(['fedavg', 'fedavgMeta', 'fedemaMeta', 'augAblation']);
      for (const x of fed) {
        expect(x.federation!.publishedRounds).toBe(2);
        expect(x.federation!.acceptedUpdates).toBe(8);
        expect(x.federation!.taskOffers).toBe(8);
        for (const round of x.federation!.rounds) {
          expect(round.map((p) => p.state)).toEqual(['accepted', 'accepted', 'accepted', 'accepted']);
          for (const p of round) expect(p.steps).toBeGreaterThanOrEqual(1);
        }
      }
      // Only the metadata arms report a metadata loss; FedEMA mixes in the local model from round 2.
      const fedavg = fed.find((x) => x.arm === 'fedavg')!.federation!;
      expect(fedavg.rounds.flat().every((p) => p.metadataLoss === 0)).toBe(true);
      const meta = fed.find((x) => x.arm === 'fedavgMeta')!.federation!;
      expect(meta.rounds.flat().every((p) => p.metadataLoss > 0)).toBe(true);
      const ema = fed.find((x) => x.arm === 'fedemaMeta')!.federation!;
      expect(ema.fedemaScaler).toBeGreaterThan(0);
      expect(ema.rounds[0]!.every((p) => p.fedemaMu === 0)).toBe(true);
      expect(ema.rounds[1]!.every((p) => p.fedemaMu! > 0)).toBe(true);
      expect(meta.roundAuc).toHaveLength(2);
      expect(ema.roundAuc).toHaveLength(2);

      expect(r.plots.map((p) => p.split('/').pop())).toEqual([
        'pneumonia-loss-per-round.png',
        'pneumonia-probe-auc-per-round.png',
      ]);
      for (const p of r.plots) expect([...readFileSync(p).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
    },
    180_000,
  );

  it.runIf(existsSync(PNEUMONIA_NPZ))(
    'a group-norm encoder federates too: rounds published from every site, no running statistics shared',
    async () => {
      const data = slicePneumoniaNpz(100, dir);
      const out = join(dir, 'out-group');
      const o = parseExperimentArgs(pneumonia, [
        '--smoke',
        '--norm',
        'group',
        '--arms',
        'fedavgMeta',
        '--out',
        out,
        '--data',
        data,
      ]);
      expect(o.norm).toBe('group');
      const r = await runExperiment(pneumonia, o);
      const fed = r.results.find((x) => x.arm === 'fedavgMeta')!.federation!;
      expect(fed.publishedRounds).toBe(2);
      expect(fed.acceptedUpdates).toBe(8);
      expect(fed.rounds.flat().every((p) => p.metadataLoss > 0)).toBe(true);
      expect(r.settings.model.norm).toBe('group');
      const model = JSON.parse(readFileSync(join(out, 'encoders', 'model.json'), 'utf8')) as { norm: string };
      expect(model.norm).toBe('group');
      expect(() => parseExperimentArgs(pneumonia, ['--smoke', '--norm', 'layer'])).toThrow(
        '--norm must be batch or group, got "layer"',
      );
    },
    180_000,
  );
  it.runIf(existsSync(PNEUMONIA_NPZ))(
    '--strategy reaches the round engine and names its own row; bad overrides fail before training',
    async () => {
      const data = slicePneumoniaNpz(100, dir);
      const out = join(dir, 'out-strategy');
      // A server learning rate of 1e-6 keeps the global model at its initial weights: under
      // FedAvg (the strategy if the option were dropped) the same rounds move it by far more.
      const o = parseExperimentArgs(pneumonia, [
        '--smoke',
        '--norm',
        'group',
        '--arms',
        'fedavgMeta',
        '--strategy',
        '{"name":"fedavgm","serverLearningRate":0.000001,"serverMomentum":0}',
        '--training',
        '{"emaMomentum":0.98}',
        '--out',
        out,
        '--data',
        data,
      ]);
      const r = await runExperiment(pneumonia, o);
      const row = r.results.find((x) => x.arm === 'fedavgMeta')!;
      expect(row.label).toBe(
        'fedavg + metadata [fedavgm serverLearningRate 0.000001 serverMomentum 0, emaMomentum 0.98]',
      );
      expect(row.federation!.publishedRounds).toBe(2);
      const trained = decodeWeights(
        new Uint8Array(readFileSync(join(out, 'encoders', `${slug(row.label)}-seed1.fsw`))),
      ).tensors;
      const initial = initSharedWeights(r.settings.model, 1);
      let maxMove = 0;
      for (const [i, t] of trained.entries())
        for (let k = 0; k < t.data.length; k++)
          maxMove = Math.max(maxMove, Math.abs(t.data[k]! - initial[i]!.data[k]!));
      expect(maxMove).toBeLessThan(1e-4);

      // A report over the journal without the flags still shows the variant's row.
      const report = await runExperiment(
        pneumonia,
        parseExperimentArgs(pneumonia, [
          '--smoke',
          '--norm',
          'group',
          '--report-only',
          '--out',
          out,
          '--data',
          data,
        ]),
      );
      expect(report.rows.map((x) => x.label)).toEqual([row.label]);

      expect(() => parseExperimentArgs(pneumonia, ['--smoke', '--strategy', 'fedsgd'])).toThrow(
        /--strategy: expected one of fedavg, fedavgm/,
      );
      expect(() => parseExperimentArgs(pneumonia, ['--smoke', '--training', '{"learningRat":1}'])).toThrow(
        /--training: .*learningRat/,
      );
      expect(() => parseExperimentArgs(pneumonia, ['--smoke', '--training', '{oops'])).toThrow(
        '--training must be JSON',
      );
    },
    180_000,
  );
});
