import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { SeededRandom, generateSyntheticScans } from './synthetic-scans';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'fedssl-scans-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function readGray(
  path: string,
): Promise<{ data: Uint8Array; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(path).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: info.channels };
}

function correlation(a: Uint8Array, b: Uint8Array): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i]! - ma;
    const db = b[i]! - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return sab / Math.sqrt(saa * sbb);
}

function parseManifest(text: string): { file: string; patient: string; lesion: string }[] {
  const [header, ...rows] = text.trim().split('\n');
  expect(header).toBe('file,patient_id,lesion');
  return rows.map((r) => {
    const [file, patient, lesion] = r.split(',');
    return { file: file!, patient: patient!, lesion: lesion! };
  });
}

describe('SeededRandom', () => {
  it('is deterministic and uniform-looking', () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const c = new SeededRandom(43);
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(Array.from({ length: 1000 }, () => b.next())).toEqual(xs);
    expect(Array.from({ length: 1000 }, () => c.next())).not.toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
  });
});

describe('generateSyntheticScans', () => {
  it.each(['ultrasound', 'xray'] as const)(
    'writes a manifest and 8-bit grayscale PNGs (%s)',
    async (modality) => {
      const outDir = await tempDir();
      const res = await generateSyntheticScans({
        outDir,
        patients: 3,
        imagesPerPatient: 4,
        size: 32,
        seed: 7,
        modality,
      });
      expect(res).toEqual({ images: 12, patients: 3, manifestPath: join(outDir, 'manifest.csv') });
      const rows = parseManifest(await readFile(res.manifestPath, 'utf8'));
      expect(rows).toHaveLength(12);
      expect(new Set(rows.map((r) => r.patient))).toEqual(new Set(['PAT-0001', 'PAT-0002', 'PAT-0003']));
      expect(rows.every((r) => r.lesion === '0' || r.lesion === '1')).toBe(true);
      const pngs = (await readdir(outDir)).filter((f) => f.endsWith('.png')).sort();
      expect(pngs).toEqual(rows.map((r) => r.file).sort());
      const meta = await sharp(join(outDir, pngs[0]!)).metadata();
      expect(meta).toMatchObject({ width: 32, height: 32, channels: 1, format: 'png', depth: 'uchar' });
    },
  );

  it('same seed → byte-identical files; different seed → different files', async () => {
    const [a, b, c] = [await tempDir(), await tempDir(), await tempDir()];
    const opts = { patients: 2, imagesPerPatient: 3, size: 32, modality: 'ultrasound' as const };
    await generateSyntheticScans({ ...opts, outDir: a, seed: 11 });
    await generateSyntheticScans({ ...opts, outDir: b, seed: 11 });
    await generateSyntheticScans({ ...opts, outDir: c, seed: 12 });
    const files = (await readdir(a)).sort();
    expect((await readdir(b)).sort()).toEqual(files);
    let differing = 0;
    for (const f of files) {
      const fa = await readFile(join(a, f));
      expect((await readFile(join(b, f))).equals(fa)).toBe(true);
      if (f.endsWith('.png') && !(await readFile(join(c, f))).equals(fa)) differing++;
    }
    expect(differing).toBe(6);
  });

  it('lesionFraction 0 and 1 label every image accordingly', async () => {
    const none = await generateSyntheticScans({
      outDir: await tempDir(),
      patients: 2,
      imagesPerPatient: 3,
      size: 16,
      seed: 1,
      modality: 'xray',
      lesionFraction: 0,
    });
    const all = await generateSyntheticScans({
      outDir: await tempDir(),
      patients: 2,
      imagesPerPatient: 3,
      size: 16,
      seed: 1,
      modality: 'xray',
      lesionFraction: 1,
    });
    expect(parseManifest(await readFile(none.manifestPath, 'utf8')).map((r) => r.lesion)).toEqual(
      Array(6).fill('0'),
    );
    expect(parseManifest(await readFile(all.manifestPath, 'utf8')).map((r) => r.lesion)).toEqual(
      Array(6).fill('1'),
    );
  });

  it.each(['ultrasound', 'xray'] as const)(
    'images of one patient are more alike than images of different patients (%s)',
    async (modality) => {
      const outDir = await tempDir();
      const res = await generateSyntheticScans({
        outDir,
        patients: 5,
        imagesPerPatient: 4,
        size: 48,
        seed: 3,
        modality,
      });
      const rows = parseManifest(await readFile(res.manifestPath, 'utf8'));
      const images = await Promise.all(
        rows.map(async (r) => ({ patient: r.patient, img: await readGray(join(outDir, r.file)) })),
      );
      let within = 0;
      let withinN = 0;
      let between = 0;
      let betweenN = 0;
      for (let i = 0; i < images.length; i++) {
        for (let j = i + 1; j < images.length; j++) {
          const r = correlation(images[i]!.img.data, images[j]!.img.data);
          if (images[i]!.patient === images[j]!.patient) {
            within += r;
            withinN++;
          } else {
            between += r;
            betweenN++;
          }
        }
      }
      within /= withinN;
      between /= betweenN;
      expect(within).toBeGreaterThan(between + 0.2);
    },
  );

  it('rejects nonsense sizes', async () => {
    await expect(
      generateSyntheticScans({
        outDir: await tempDir(),
        patients: 0,
        imagesPerPatient: 1,
        seed: 1,
        modality: 'xray',
      }),
    ).rejects.toThrow('patients must be a positive integer, got 0');
  });
});
