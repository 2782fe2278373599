#!/usr/bin/env node
/** Writes a folder of synthetic grayscale scans + manifest.csv (the demo's and tests' data). */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateSyntheticScans } from './synthetic-scans';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      patients: { type: 'string', default: '10' },
      'images-per-patient': { type: 'string', default: '3' },
      size: { type: 'string', default: '64' },
      seed: { type: 'string', default: '1' },
      modality: { type: 'string', default: 'ultrasound' },
    },
  });
  if (!values.out) throw new Error('--out DIR is required');
  const modality = values.modality;
  if (modality !== 'ultrasound' && modality !== 'xray')
    throw new Error(`--modality must be ultrasound or xray, got ${modality}`);
  const int = (name: keyof typeof values) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
    return n;
  };
  const made = await generateSyntheticScans({
    outDir: path.resolve(values.out),
    patients: int('patients'),
    imagesPerPatient: int('images-per-patient'),
    size: int('size'),
    seed: int('seed'),
    modality,
  });
  console.log(`wrote ${made.images} images of ${made.patients} patients and ${made.manifestPath}`);
}

main().catch((err: unknown) => {
  console.error(`generate-data: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
