import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseEncodingCostArgs, runEncodingCost } from '../../bench/experiments/encodings';
import { modelOf } from '../../bench/experiments/experiment';
import { parameterCountOf } from '../../bench/lib/updates';
import { PNEUMONIA_NPZ, slicePneumoniaNpz } from '../support/pneumonia-slice';

/**
 * `npm run bench -- transfer --probe <experiment>` in smoke mode on a slice of the real
 * PneumoniaMNIST file: one federated run per encoding through the round engine, the bytes
 * each agent's ledger recorded, the probe, the paired AUC differences and the RESULT lines;
 * and float32 run twice gives the same global model, so a difference between encodings of
 * one seed is the encoding's alone.
 */

const dir = mkdtempSync(join(tmpdir(), 'fedssl-enc-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('transfer --probe: probe AUC cost of the update encodings', () => {
  it('parses the mode with small-budget defaults that options override', () => {
    const a = parseEncodingCostArgs(['--', '--probe', 'busbra']);
    expect(a.def.name).toBe('busbra');
    expect(a.encodings).toEqual(['float32', 'float16', 'int8']);
    expect(a.options).toMatchObject({ epochs: 1, rounds: 5, seeds: [1, 2], imageSize: 32 });
    expect(a.options.out).toBe('/tmp/fedssl-transfer-probe-busbra');
    const b = parseEncodingCostArgs(['--probe', 'pneumonia', '--seeds', '3', '--encodings', 'int8,float32']);
    expect(b.options.seeds).toEqual([3]);
    expect(b.encodings).toEqual(['int8', 'float32']);
    expect(() => parseEncodingCostArgs(['--probe', 'cifar'])).toThrow(
      '--probe needs busbra or pneumonia, got cifar',
    );
    expect(() => parseEncodingCostArgs(['--probe', 'busbra', '--encodings', 'bfloat16'])).toThrow(
      'unknown encoding bfloat16; one of float32, float16, int8',
    );
  });

  it.runIf(existsSync(PNEUMONIA_NPZ))(
    'runs each encoding through the federation, reports bytes, AUC and deltas; float32 is reproducible',
    async () => {
      const data = slicePneumoniaNpz(100, dir);
      const args = ['--probe', 'pneumonia', '--smoke', '--seeds', '1', '--rounds', '2', '--data', data];
      const a = parseEncodingCostArgs([...args, '--out', join(dir, 'a')]);
      const r = await runEncodingCost(a.def, a.options, a.encodings);

      expect(r.runs.map((x) => x.encoding)).toEqual(['float32', 'float16', 'int8']);
      for (const run of r.runs) {
        expect(run.publishedRounds).toBe(2);
        expect(run.acceptedUpdates).toBe(8);
        expect(run.upload).toHaveLength(2);
        for (const round of run.upload) expect(round).toHaveLength(4);
        expect(run.probe.auc).toHaveLength(5);
      }
      const [f32, f16, i8] = r.summaries;
      // Every agent downloads the float32 model whatever it uploads.
      expect(f16!.downloadBytesPerRoundPerSite).toBe(f32!.downloadBytesPerRoundPerSite);
      expect(i8!.downloadBytesPerRoundPerSite).toBe(f32!.downloadBytesPerRoundPerSite);
      // float16 saves 2 bytes per shared parameter (the header's metrics vary by a few digits).
      // int8 saves 3 but stores a scale per tensor in the manifest: on this ~1k-parameter smoke
      // model that costs more than float16 saves, so only "smaller than float32" holds here.
      const params = parameterCountOf(modelOf(a.options));
      expect(f32!.uploadBytesPerRoundPerSite - f16!.uploadBytesPerRoundPerSite).toBeGreaterThan(
        2 * params - 64,
      );
      expect(f32!.uploadBytesPerRoundPerSite - f16!.uploadBytesPerRoundPerSite).toBeLessThan(2 * params + 64);
      expect(i8!.uploadBytesPerRoundPerSite).toBeLessThan(f32!.uploadBytesPerRoundPerSite);
      // The quantized runs trained on different global models from round 2 on.
      expect(f32!.deltaPoints).toBeUndefined();
      for (const s of [f16!, i8!]) {
        expect(s.deltaPoints).toHaveLength(1);
        expect(s.weightDistance![0]).toBeGreaterThan(0);
      }
      // Not ordered int8 > float16: after two rounds both distances are dominated by training
      // from a slightly different global model (measured 4.2e-3 vs 4.4e-3 at one commit, 4.9e-3
      // vs 4.1e-3 after an ulp-level change of the FedAvg fold). Their size is the property: a
      // broken decode or scale would move the model by orders of magnitude more.
      for (const s of [f16!, i8!]) expect(s.weightDistance![0]).toBeLessThan(0.05);

      const value = (name: string) =>
        Number(r.resultLines.find((l) => l.startsWith(`RESULT ${name}=`))?.split(/[= ]/)[2]);
      for (const s of r.summaries)
        expect(value(`transfer_probe_auc_${s.encoding}`)).toBeCloseTo(s.auc.mean, 4);
      expect(value('transfer_probe_auc_delta_int8_vs_float32')).toBeCloseTo(
        100 * (i8!.aucPerSeed[0]! - f32!.aucPerSeed[0]!),
        2,
      );
      expect(r.resultLines).toContain('RESULT transfer_probe_seeds=1 seeds');
      for (const l of r.resultLines)
        expect(l).toMatch(/^RESULT transfer_probe_[a-z0-9_]+=-?[0-9.]+ [a-zA-Z_]+$/);
      expect(r.table).toContain('| int8 |');

      // The same float32 run again, in a fresh folder: bit-identical global model and probe.
      const b = parseEncodingCostArgs([...args, '--out', join(dir, 'b'), '--encodings', 'float32']);
      const again = await runEncodingCost(b.def, b.options, b.encodings);
      const weights = (out: string) => readFileSync(join(out, 'encoders', 'encoding-float32-seed1.fsw'));
      expect(weights(join(dir, 'b')).equals(weights(join(dir, 'a')))).toBe(true);
      expect(again.runs[0]!.probe.auc).toEqual(r.runs[0]!.probe.auc);
    },
    300_000,
  );
});
