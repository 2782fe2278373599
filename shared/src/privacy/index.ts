export * from './accountant';
export * from './config';
export * from './dp';
export * from './random';
