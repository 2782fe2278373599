export * from './config';
export * from './architecture';
export * from './spec';
export * from './init';
export * from './presets';
export type { NamedTensor, NamedTensors } from '../codec/types';
export * from './export';
