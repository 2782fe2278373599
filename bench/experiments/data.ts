import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { mulberry32 } from '@fedssl/shared/model';
import type { TrainingDataset } from '../../site-agent/src/data/dataset';
import { loadTrainingDataset, type ImageInfo } from '../../site-agent/src/data/load-dataset';

/**
 * Real data split into simulated hospitals. Every image is loaded once through the agent's
 * own reader (`loadTrainingDataset`: decode, grayscale, resize, pseudonymize), then each
 * site gets the subset of its images as a {@link TrainingDataset} whose metadata classes are
 * re-indexed site-locally, as an agent reading only that site's folder would number them.
 */

/** One simulated hospital. */
export interface SiteData {
  /** Stable id used as the coordinator's site id (`[a-z0-9-]`). */
  id: string;
  /** Name in tables (`local-only <name>`). */
  name: string;
  dataset: TrainingDataset;
  /** Label counts (positives, total) for the report. */
  positives: number;
}

/** The pooled, labelled data every arm is probed on (same protocol for all arms). */
export interface ProbeData {
  dataset: TrainingDataset;
  /** 0/1 downstream label of every image. */
  labels: Int32Array;
  /** Patient of every image (folds never split a patient). */
  groups: Int32Array;
  /** Official fold of every image, when the dataset has them; else seeded patient-wise folds. */
  folds?: Int32Array;
  /** What the folds are (for the report). */
  foldSource: string;
  positiveClass: string;
}

export interface ExperimentData {
  sites: SiteData[];
  probe: ProbeData;
  /** One line describing the split (for the report). */
  description: string;
}

/**
 * The images at `indices` as a dataset of their own, metadata classes renumbered 0..k−1
 * in order of first appearance (a site numbers only its own patients).
 */
export function subsetDataset(ds: TrainingDataset, indices: readonly number[]): TrainingDataset {
  const px = ds.height * ds.width;
  const pixels = new Float32Array(indices.length * px);
  const labels = new Int32Array(indices.length);
  const renumber = new Map<number, number>();
  indices.forEach((idx, i) => {
    pixels.set(ds.pixels.subarray(idx * px, (idx + 1) * px), i * px);
    const c = ds.metadataLabels[idx]!;
    if (!renumber.has(c)) renumber.set(c, renumber.size);
    labels[i] = renumber.get(c)!;
  });
  return {
    count: indices.length,
    height: ds.height,
    width: ds.width,
    pixels,
    metadataLabels: labels,
    metadataClasses: renumber.size,
  };
}

/** The first `n` images (smoke runs), keeping all arrays aligned. */
function firstImages<T>(xs: readonly T[], n: number | undefined): T[] {
  return n === undefined ? xs.slice() : xs.slice(0, n);
}

/** Gamma(shape, 1) by Marsaglia–Tsang (with the U^(1/α) boost for shape < 1). */
function gammaSample(shape: number, rand: () => number): number {
  if (shape < 1) return gammaSample(shape + 1, rand) * Math.pow(rand(), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      // Box–Muller normal.
      x = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rand();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/**
 * Dirichlet(α) label skew (Hsu et al. 2019): for each class, the class's images (shuffled)
 * are dealt to the K sites in proportions drawn from Dir(α, …, α). Redrawn until every
 * site has at least `minPerSite` images. Returns the site (0..K−1) of every image.
 */
export function dirichletSplit(
  labels: ArrayLike<number>,
  sites: number,
  alpha: number,
  seed: number,
  minPerSite = 10,
): Int32Array {
  const rand = mulberry32(seed);
  const classes = [...new Set(Array.from(labels))].sort((a, b) => a - b);
  for (let attempt = 0; attempt < 1000; attempt++) {
    const site = new Int32Array(labels.length);
    const counts = new Array<number>(sites).fill(0);
    for (const c of classes) {
      const idx: number[] = [];
      for (let i = 0; i < labels.length; i++) if (labels[i] === c) idx.push(i);
      for (let i = idx.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [idx[i], idx[j]] = [idx[j]!, idx[i]!];
      }
      const g = Array.from({ length: sites }, () => gammaSample(alpha, rand));
      const total = g.reduce((a, b) => a + b, 0);
      let start = 0;
      let cum = 0;
      for (let k = 0; k < sites; k++) {
        cum += g[k]! / total;
        const end = k === sites - 1 ? idx.length : Math.round(cum * idx.length);
        for (let i = start; i < end; i++) site[idx[i]!] = k;
        counts[k]! += end - start;
        start = end;
      }
    }
    if (counts.every((n) => n >= minPerSite)) return site;
  }
  throw new Error(`no Dirichlet(${alpha}) split gave every one of ${sites} sites ${minPerSite} images`);
}

function sitesFrom(
  dataset: TrainingDataset,
  labels: Int32Array,
  assignment: ArrayLike<number>,
  names: string[],
): SiteData[] {
  return names.map((name, k) => {
    const idx: number[] = [];
    for (let i = 0; i < assignment.length; i++) if (assignment[i] === k) idx.push(i);
    return {
      id: `site-${k + 1}`,
      name,
      dataset: subsetDataset(dataset, idx),
      positives: idx.reduce((n, i) => n + labels[i]!, 0),
    };
  });
}

/** Options common to the loaders. */
export interface LoadOptions {
  imageSize: number;
  sites: number;
  /** Keep only the first N images (smoke runs). */
  maxImages?: number;
  /** Seed of the site split (PneumoniaMNIST) and of seeded folds. */
  splitSeed?: number;
}

/**
 * PneumoniaMNIST (MedMNIST v2, train split): `sites` hospitals with Dirichlet(α) skew of the
 * pneumonia label; no patient ids, so every image is its own patient (and metadata class)
 * and the probe uses 5 seeded folds.
 */
export async function loadPneumonia(
  npz: string,
  o: LoadOptions & { alpha: number },
): Promise<ExperimentData> {
  const { dataset, images } = await loadTrainingDataset({
    path: npz,
    split: 'train',
    imageSize: o.imageSize,
    secret: new Uint8Array(randomBytes(32)),
  });
  const keep = firstImages(
    images.map((_, i) => i),
    o.maxImages,
  );
  const all = subsetDataset(dataset, keep);
  const labels = Int32Array.from(keep, (i) => Number(images[i]!.label));
  const assignment = dirichletSplit(labels, o.sites, o.alpha, o.splitSeed ?? 1, o.maxImages ? 4 : 10);
  const names = Array.from({ length: o.sites }, (_, k) => `site ${k + 1}`);
  const sites = sitesFrom(all, labels, assignment, names);
  return {
    sites,
    probe: {
      dataset: all,
      labels,
      groups: Int32Array.from(keep, (_, i) => i),
      foldSource: '5 seeded folds (one image per patient: MedMNIST has no patient ids)',
      positiveClass: 'pneumonia',
    },
    description:
      `PneumoniaMNIST train split, ${all.count} images (${labels.reduce((a, b) => a + b, 0)} pneumonia), ` +
      `${o.sites} sites by Dirichlet(α = ${o.alpha}) label skew (split seed ${o.splitSeed ?? 1}): ` +
      sites.map((s) => `${s.name} ${s.dataset.count} (${s.positives} pneumonia)`).join(', '),
  };
}

/** The short scanner name of a BUS-BRA `Device` value ("GE Logiq 7 @10-14MHz" → "GE Logiq 7"). */
export function scannerName(device: string): string {
  return device.split('@')[0]!.trim();
}

/** A manifest in the agent's folder format from BUS-BRA's two CSV files. */
export function writeBusbraManifest(dataDir: string, outDir: string): string {
  const parse = (file: string) => {
    const [head, ...rows] = readFileSync(path.join(dataDir, file), 'utf8').trim().split(/\r?\n/);
    const cols = head!.split(',');
    // The first columns hold no quoted commas (BBOX, the last column, does).
    return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i], v])));
  };
  const fold = new Map(parse('5-fold-cv.csv').map((r) => [r.ID, r.kFold]));
  const lines = ['file,patient_id,pathology,device,fold'];
  for (const r of parse('bus_data.csv'))
    lines.push(`${r.ID}.png,${r.Case},${r.Pathology},"${r.Device}",${fold.get(r.ID!)}`);
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'manifest.csv');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/**
 * BUS-BRA: sites = scanners (`Device`), the `sites` largest kept. A patient whose images
 * come from two scanners would straddle sites; such a patient goes wholly to the scanner of
 * its first image (the count is reported). Label: Pathology (malignant = 1); folds: the
 * official patient-wise `5-fold-cv.csv`.
 */
export async function loadBusbra(dataDir: string, outDir: string, o: LoadOptions): Promise<ExperimentData> {
  const manifest = writeBusbraManifest(dataDir, outDir);
  const { dataset, images } = await loadTrainingDataset({
    path: path.join(dataDir, 'images'),
    manifest,
    labelColumn: 'pathology',
    imageSize: o.imageSize,
    secret: new Uint8Array(randomBytes(32)),
    concurrency: 2,
  });
  const keep = firstImages(
    images.map((_, i) => i),
    o.maxImages,
  );
  const info = keep.map((i) => images[i]!);
  const device = (im: ImageInfo) => scannerName(im.tags.device ?? '');
  // Site of a patient: the scanner of its first image.
  const patientDevice = new Map<number, string>();
  let moved = 0;
  for (const im of info) {
    const d = patientDevice.get(im.patientClass);
    if (d === undefined) patientDevice.set(im.patientClass, device(im));
    else if (d !== device(im)) moved++;
  }
  const counts = new Map<string, number>();
  for (const im of info) {
    const d = patientDevice.get(im.patientClass)!;
    counts.set(d, (counts.get(d) ?? 0) + 1);
  }
  const names = [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, o.sites)
    .map(([d]) => d);
  // Images of dropped scanners (when --sites is below 4) leave the whole experiment.
  const kept = keep.filter((i) => names.includes(patientDevice.get(images[i]!.patientClass)!));
  const all = subsetDataset(dataset, kept);
  const labels = Int32Array.from(kept, (i) => (images[i]!.label === 'malignant' ? 1 : 0));
  const assignment = Int32Array.from(kept, (i) => names.indexOf(patientDevice.get(images[i]!.patientClass)!));
  const sites = sitesFrom(all, labels, assignment, names);
  const folds = Int32Array.from(kept, (i) => Number(images[i]!.tags.fold));
  const foldsOk = folds.every((f) => Number.isInteger(f));
  return {
    sites,
    probe: {
      dataset: all,
      labels,
      groups: all.metadataLabels,
      ...(foldsOk ? { folds } : {}),
      foldSource: foldsOk ? 'official patient-wise 5-fold-cv.csv' : '5 seeded patient-wise folds',
      positiveClass: 'malignant',
    },
    description:
      `BUS-BRA, ${all.count} images of ${all.metadataClasses} patients (${labels.reduce((a, b) => a + b, 0)} malignant), ` +
      `sites = scanner: ${sites.map((s) => `${s.name} ${s.dataset.count} (${s.positives} malignant)`).join(', ')}` +
      (moved
        ? `; ${moved} image(s) moved to their patient's first scanner`
        : '; no patient spans two scanners'),
  };
}
