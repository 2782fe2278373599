export * from './consortium';
export * from './processes';
export { generateSyntheticScans } from './synthetic-scans';
