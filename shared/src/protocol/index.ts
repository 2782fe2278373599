export * from './messages';
export type * from './events';
