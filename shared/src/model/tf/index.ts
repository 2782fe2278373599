export * from './params';
export * from './forward';
