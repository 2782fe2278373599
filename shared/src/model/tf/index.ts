export * from './params';
export * from './batch-norm';
export * from './group-norm';
export * from './conv';
export * from './forward';
export * from './export-layers';
