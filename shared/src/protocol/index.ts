export * from './messages';
export * from './secagg';
export * from './key-rotation';
export type * from './events';
