export * from './params';
export * from './forward';
export * from './export-layers';
