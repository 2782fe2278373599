import * as path from 'node:path';
import { loadBusbra, loadPneumonia } from './data';
import type { ExperimentDefinition } from './experiment';

/** The two experiments: how each loads and splits its data, and its defaults. */

const DATA = path.join(__dirname, '..', '..', '..', 'shared', 'data');

export const pneumonia: ExperimentDefinition = {
  name: 'pneumonia',
  title: 'PneumoniaMNIST',
  defaults: { imageSize: 28, sites: 4 },
  extraOptions: {
    alpha: { type: 'string', default: '0.5' },
    data: {
      type: 'string',
      default: path.join(DATA, 'medmnist', 'pneumoniamnist.npz'),
    },
  },
  load: (o) =>
    loadPneumonia(String(o.argv.data), {
      imageSize: o.imageSize,
      sites: o.sites,
      alpha: Number(o.argv.alpha),
      ...(o.maxImages !== undefined ? { maxImages: o.maxImages } : {}),
    }),
};

export const busbra: ExperimentDefinition = {
  name: 'busbra',
  title: 'BUS-BRA',
  defaults: { imageSize: 32, sites: 4 },
  extraOptions: {
    data: { type: 'string', default: path.join(DATA, 'busbra') },
  },
  load: (o) =>
    loadBusbra(String(o.argv.data), o.out, {
      imageSize: o.imageSize,
      sites: o.sites,
      ...(o.maxImages !== undefined ? { maxImages: o.maxImages } : {}),
    }),
};
