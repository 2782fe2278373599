export * from './messages';
export * from './key-rotation';
export type * from './events';
