export * from './safetensors';
export * from './torch-names';
export * from './model-card';
export * from './zip';
export * from './tfjs-input-size';
