import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { strToU8, unzipSync, zipSync } from 'fflate';
import { parseNpy } from '../../site-agent/src/data/npz-source';

/** The real PneumoniaMNIST file (MedMNIST v2) beside the project, see ../shared/data/SOURCES.md. */
export const PNEUMONIA_NPZ = join(
  __dirname,
  '..',
  '..',
  '..',
  'shared',
  'data',
  'medmnist',
  'pneumoniamnist.npz',
);

/**
 * The first `n` training images and labels of the real PneumoniaMNIST file as a small .npz
 * of their own in `dir` (for smoke runs of the experiments); returns its path.
 */
export function slicePneumoniaNpz(n: number, dir: string): string {
  const entries = unzipSync(new Uint8Array(readFileSync(PNEUMONIA_NPZ)));
  const npy = (shape: number[], data: Uint8Array) => {
    let header = `{'descr': '|u1', 'fortran_order': False, 'shape': (${shape.join(', ')},), }`;
    header += ' '.repeat(63 - ((header.length + 10) % 64)) + '\n';
    const h = strToU8(header);
    const out = new Uint8Array(10 + h.length + data.length);
    out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, h.length & 0xff, h.length >> 8]);
    out.set(h, 10);
    out.set(data, 10 + h.length);
    return out;
  };
  const images = parseNpy(entries['train_images.npy']!);
  const labels = parseNpy(entries['train_labels.npy']!);
  const imgData = (images.data as Uint8Array).subarray(0, n * 28 * 28);
  const labData = (labels.data as Uint8Array).subarray(0, n);
  const file = join(dir, 'small.npz');
  writeFileSync(
    file,
    zipSync({ 'train_images.npy': npy([n, 28, 28], imgData), 'train_labels.npy': npy([n, 1], labData) }),
  );
  return file;
}
