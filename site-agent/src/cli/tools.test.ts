import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProbeReport } from './probe';
import { probeCommand } from './probe';
import { trainLocalCommand } from './train-local';

/**
 * train-local and probe through their command functions on a small image folder: 12
 * patients × 2 images, label = bright vs dark (learnable even from random features), and a
 * second label column assigned at random per patient.
 */
describe('train-local and probe commands', () => {
  let root: string;
  let data: string;
  const logger = pino({ level: 'silent' });

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-tools-'));
    data = path.join(root, 'data');
    await mkdir(data);
    const rows = ['file,patient_id,bright,coin'];
    for (let p = 0; p < 12; p++) {
      for (const side of ['l', 'r']) {
        const bright = p % 2;
        const px = Buffer.alloc(16 * 16);
        for (let i = 0; i < px.length; i++) px[i] = (bright ? 150 : 40) + ((i * 37 + p * 11) % 60);
        const file = `p${p}-${side}.png`;
        await sharp(px, { raw: { width: 16, height: 16, channels: 1 } })
          .png()
          .toFile(path.join(data, file));
        rows.push(`${file},P${p},${bright ? 'yes' : 'no'},${[0, 3, 4, 7, 9, 10].includes(p) ? 'a' : 'b'}`);
      }
    }
    await writeFile(path.join(data, 'manifest.csv'), `${rows.join('\n')}\n`);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const capture = () => {
    const lines: string[] = [];
    return { lines, io: { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l) } };
  };

  it('trains, resumes on a second call, and the probe reads its output', async () => {
    const out = path.join(root, 'enc');
    const base = {
      data,
      out,
      arch: 'tiny' as const,
      widths: [4, 8, 8],
      size: 16,
      batchSize: 4,
      // The probed label is image brightness, which group norm (the default) normalizes away
      // by design; batch-norm features in inference mode keep it, so the AUC check below can
      // tell whether the probe read this encoder's features.
      norm: 'batch' as const,
      logger,
      backend: 'wasm' as const,
    };
    const first = capture();
    expect(await trainLocalCommand({ ...base, steps: 2, checkpointEvery: 1, json: true }, first.io)).toBe(0);
    const firstSummary = JSON.parse(first.lines.join('\n')) as { cpuSeconds: number; seconds: number };
    expect(firstSummary).toMatchObject({ steps: 2, resumedFromStep: 0, images: 24, metadataClasses: 12 });
    // CPU time is reported (the budget benchmarks compare), and training cost some.
    expect(firstSummary.cpuSeconds).toBeGreaterThan(0);
    // Same settings, larger budget: continues from step 2.
    const second = capture();
    expect(await trainLocalCommand({ ...base, steps: 3, checkpointEvery: 1, json: true }, second.io)).toBe(0);
    expect(JSON.parse(second.lines.join('\n'))).toMatchObject({ steps: 3, resumedFromStep: 2 });
    const manifest = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8')) as {
      unsigned: boolean;
    };
    expect(manifest.unsigned).toBe(true);

    const probe = capture();
    const common = { data, logger, backend: 'wasm' as const, folds: 3, json: true };
    expect(await probeCommand({ ...common, encoder: out, labelColumn: 'bright' }, probe.io)).toBe(0);
    const r = JSON.parse(probe.lines.join('\n')) as ProbeReport;
    expect(r.folds).toHaveLength(3);
    expect(r.images).toBe(24);
    expect(r.positives).toBe(12);
    expect(r.auc.mean).toBeGreaterThan(0.8);
    expect(r.encoder).toMatchObject({ signed: false, source: out });
  });

  it('gives the random-init baseline and refuses a non-binary label column', async () => {
    const human = capture();
    const common = {
      data,
      logger,
      backend: 'wasm' as const,
      encoder: 'random',
      arch: 'tiny' as const,
      size: 16,
      folds: 3,
    };
    expect(await probeCommand({ ...common, labelColumn: 'bright' }, human.io)).toBe(0);
    const text = human.lines.join('\n').split('\n');
    expect(text[0]).toBe('Encoder:   random-init seed 1 (tiny, 16 px, 64 features)');
    expect(text.at(-2)).toMatch(/^AUC {7}\d\.\d{3} ± \d\.\d{3} \(mean ± std over 3 folds\)$/);
    // The group-norm baseline is another network: same seed, different features, hence AUC.
    const batchJson = capture();
    const groupJson = capture();
    // `norm: 'batch'` explicitly: group norm is the default, and two runs of the same network
    // must not be what makes the AUCs differ.
    expect(
      await probeCommand({ ...common, labelColumn: 'coin', json: true, norm: 'batch' }, batchJson.io),
    ).toBe(0);
    expect(
      await probeCommand({ ...common, labelColumn: 'coin', json: true, norm: 'group' }, groupJson.io),
    ).toBe(0);
    const aucOf = (c: { lines: string[] }) =>
      (JSON.parse(c.lines.join('\n')) as { auc: { mean: number } }).auc.mean;
    expect(aucOf(groupJson)).not.toBe(aucOf(batchJson));
    // The same probe twice gives the same figure (folds and classes follow the pseudonyms).
    const again = capture();
    expect(await probeCommand({ ...common, labelColumn: 'coin', json: true, norm: 'group' }, again.io)).toBe(
      0,
    );
    expect(aucOf(again)).toBe(aucOf(groupJson));
    await expect(probeCommand({ ...common, labelColumn: 'patient_id' }, capture().io)).rejects.toThrow(
      'label column "patient_id" has 12 classes (counting images without a value as one); the probe needs exactly 2',
    );
  });
});
