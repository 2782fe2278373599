export * from './params';
export * from './batch-norm';
export * from './forward';
export * from './export-layers';
