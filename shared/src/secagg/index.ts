export * from './protocol';
export * from './ring';
export * from './wire';
export * from './statistics';
