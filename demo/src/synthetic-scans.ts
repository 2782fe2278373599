import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';

/**
 * Synthetic grayscale "scans" with patient structure, for demos and tests.
 *
 * Every patient gets an anatomy (a few smooth ellipses and bands at patient-specific
 * positions and intensities); every image of that patient is the anatomy seen with a small
 * shift and zoom, plus modality-typical noise, and sometimes a small lesion. Images of one
 * patient are therefore more alike than images of two patients, which is what the
 * metadata (patient) head of fedssl learns from. Patient ids are fake ("PAT-0007").
 *
 * Everything is derived from `seed` through one seeded PRNG, so the same options write
 * byte-identical files.
 */

/** Options of {@link generateSyntheticScans}. */
export interface SyntheticScanOptions {
  /** Folder to write `scan-NNNNN.png` files and `manifest.csv` into (created if missing). */
  outDir: string;
  /** Number of fake patients. */
  patients: number;
  /** Images written per patient. */
  imagesPerPatient: number;
  /** Side of the square images in pixels (default 64). */
  size?: number;
  /** PRNG seed: same seed, same bytes. */
  seed: number;
  /** Noise model: multiplicative speckle (ultrasound) or photon-count noise (X-ray). */
  modality: 'ultrasound' | 'xray';
  /** Fraction of images that get a small lesion (default 0.4). */
  lesionFraction?: number;
  /** Prefix of the fake patient ids (default "PAT"), e.g. to give each demo site its own. */
  patientIdPrefix?: string;
}

/** What {@link generateSyntheticScans} wrote. */
export interface SyntheticScanResult {
  images: number;
  patients: number;
  manifestPath: string;
}

/** A seeded PRNG (mulberry32 over a splitmix32-scrambled seed): uniform in [0, 1). */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    // splitmix32 scramble so nearby seeds (1, 2, 3) start far apart.
    let z = (Math.trunc(seed) + 0x9e3779b9) | 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    this.state = (z ^ (z >>> 16)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** Standard normal (Box–Muller). */
  gaussian(): number {
    const u = 1 - this.next(); // (0, 1]: log is finite
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

interface Ellipse {
  kind: 'ellipse';
  cx: number;
  cy: number;
  rx: number;
  ry: number;
  angle: number;
  intensity: number;
  /** Edge softness in normalized radius units. */
  softness: number;
}

interface Band {
  kind: 'band';
  /** Direction of the band's normal and its signed distance from the centre. */
  angle: number;
  offset: number;
  halfWidth: number;
  intensity: number;
  softness: number;
}

type Shape = Ellipse | Band;

interface Anatomy {
  background: number;
  shapes: Shape[];
}

function makeAnatomy(rng: SeededRandom, modality: SyntheticScanOptions['modality']): Anatomy {
  const shapes: Shape[] = [];
  const ellipses = rng.int(3, 5);
  for (let i = 0; i < ellipses; i++) {
    shapes.push({
      kind: 'ellipse',
      cx: rng.range(0.2, 0.8),
      cy: rng.range(0.2, 0.8),
      rx: rng.range(0.08, 0.3),
      ry: rng.range(0.08, 0.3),
      angle: rng.range(0, Math.PI),
      // X-ray: dense structures bright, air dark; ultrasound: echogenic tissue bright.
      intensity: modality === 'xray' ? rng.range(0.05, 0.95) : rng.range(0.25, 0.95),
      softness: rng.range(0.05, 0.25),
    });
  }
  const bands = rng.int(1, 2);
  for (let i = 0; i < bands; i++) {
    shapes.push({
      kind: 'band',
      angle: rng.range(0, Math.PI),
      offset: rng.range(-0.3, 0.3),
      halfWidth: rng.range(0.02, 0.08),
      intensity: rng.range(0.4, 1),
      softness: rng.range(0.01, 0.04),
    });
  }
  return { background: rng.range(0.05, 0.35), shapes };
}

/** Smooth step from 1 (inside, d ≤ 1 - s) to 0 (outside, d ≥ 1 + s). */
function softInside(d: number, softness: number): number {
  const t = (d - (1 - softness)) / (2 * softness);
  if (t <= 0) return 1;
  if (t >= 1) return 0;
  return 1 - t * t * (3 - 2 * t);
}

function shapeAlpha(s: Shape, u: number, v: number): number {
  if (s.kind === 'ellipse') {
    const dx = u - s.cx;
    const dy = v - s.cy;
    const c = Math.cos(s.angle);
    const sn = Math.sin(s.angle);
    const a = (dx * c + dy * sn) / s.rx;
    const b = (-dx * sn + dy * c) / s.ry;
    return softInside(Math.sqrt(a * a + b * b), s.softness);
  }
  const dist = (u - 0.5) * Math.cos(s.angle) + (v - 0.5) * Math.sin(s.angle) - s.offset;
  return softInside(Math.abs(dist) / s.halfWidth, s.softness / s.halfWidth);
}

interface Lesion {
  cx: number;
  cy: number;
  r: number;
  contrast: number;
}

function renderImage(
  anatomy: Anatomy,
  size: number,
  modality: SyntheticScanOptions['modality'],
  rng: SeededRandom,
  lesion: Lesion | null,
): Uint8Array {
  // Per-image pose: the same anatomy seen slightly shifted and zoomed.
  const dx = rng.range(-0.04, 0.04);
  const dy = rng.range(-0.04, 0.04);
  const zoom = rng.range(0.94, 1.06);
  const out = new Uint8Array(size * size);
  // Rayleigh with σ = 1 has mean √(π/2); dividing by it makes speckle mean-preserving.
  const rayleighMean = Math.sqrt(Math.PI / 2);
  const photons = 60; // X-ray: expected counts at full intensity (low → visibly noisy).
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const u = ((x + 0.5) / size - 0.5 - dx) / zoom + 0.5;
      const v = ((y + 0.5) / size - 0.5 - dy) / zoom + 0.5;
      let value = anatomy.background;
      for (const s of anatomy.shapes) {
        const a = shapeAlpha(s, u, v);
        if (a > 0) value = value * (1 - a) + s.intensity * a;
      }
      if (lesion) {
        const d = Math.hypot(u - lesion.cx, v - lesion.cy) / lesion.r;
        value += lesion.contrast * softInside(d, 0.3);
      }
      if (modality === 'ultrasound') {
        // Echo falls off with depth (rows), then multiplicative Rayleigh speckle.
        value *= 1 - 0.35 * ((y + 0.5) / size);
        const speckle = Math.sqrt(-2 * Math.log(1 - rng.next())) / rayleighMean;
        value *= 0.5 + 0.5 * speckle;
      } else {
        // Photon counting: Poisson(λ = value·N)/N, approximated by a Gaussian of equal variance.
        const lambda = Math.max(0, value) * photons;
        value = (lambda + Math.sqrt(lambda) * rng.gaussian()) / photons;
      }
      out[y * size + x] = Math.round(Math.min(1, Math.max(0, value)) * 255);
    }
  }
  return out;
}

function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * Write `patients × imagesPerPatient` synthetic grayscale PNG scans and a `manifest.csv`
 * (`file,patient_id,lesion`) into `outDir`. Deterministic from `seed`.
 * @example
 * await generateSyntheticScans({ outDir: 'data/site-a', patients: 8, imagesPerPatient: 6, seed: 1, modality: 'ultrasound' });
 */
export async function generateSyntheticScans(opts: SyntheticScanOptions): Promise<SyntheticScanResult> {
  const size = opts.size ?? 64;
  const lesionFraction = opts.lesionFraction ?? 0.4;
  const prefix = opts.patientIdPrefix ?? 'PAT';
  if (!Number.isInteger(opts.patients) || opts.patients < 1)
    throw new RangeError(`patients must be a positive integer, got ${opts.patients}`);
  if (!Number.isInteger(opts.imagesPerPatient) || opts.imagesPerPatient < 1) {
    throw new RangeError(`imagesPerPatient must be a positive integer, got ${opts.imagesPerPatient}`);
  }
  if (!Number.isInteger(size) || size < 8 || size > 4096)
    throw new RangeError(`size must be an integer in [8, 4096], got ${size}`);
  if (!(lesionFraction >= 0 && lesionFraction <= 1))
    throw new RangeError(`lesionFraction must be in [0, 1], got ${lesionFraction}`);

  await mkdir(opts.outDir, { recursive: true });
  const rng = new SeededRandom(opts.seed);
  const rows: string[] = ['file,patient_id,lesion'];
  let index = 0;
  for (let p = 0; p < opts.patients; p++) {
    const patientId = `${prefix}-${String(p + 1).padStart(4, '0')}`;
    const anatomy = makeAnatomy(rng, opts.modality);
    for (let i = 0; i < opts.imagesPerPatient; i++) {
      const hasLesion = rng.next() < lesionFraction;
      // Radius ≤ 0.12 of the side: area ≤ π·0.0144 ≈ 4.5 % of the image (< 10 %).
      const lesion: Lesion | null = hasLesion
        ? {
            cx: rng.range(0.25, 0.75),
            cy: rng.range(0.25, 0.75),
            r: rng.range(0.04, 0.12),
            contrast: rng.next() < 0.5 ? -0.35 : 0.35,
          }
        : null;
      const pixels = renderImage(anatomy, size, opts.modality, rng, lesion);
      const file = `scan-${String(index).padStart(5, '0')}.png`;
      const png = await sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), {
        raw: { width: size, height: size, channels: 1 },
      })
        // Without an explicit colourspace sharp writes 1-channel raw input as RGB PNG.
        .toColourspace('b-w')
        .png({ compressionLevel: 9 })
        .toBuffer();
      await writeFile(join(opts.outDir, file), png);
      rows.push([csvField(file), csvField(patientId), hasLesion ? '1' : '0'].join(','));
      index++;
    }
  }
  const manifestPath = join(opts.outDir, 'manifest.csv');
  await writeFile(manifestPath, rows.join('\n') + '\n');
  return { images: index, patients: opts.patients, manifestPath };
}
