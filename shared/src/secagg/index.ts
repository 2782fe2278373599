export * from './protocol';
export * from './ring';
