import { modelConfigSchema, type ModelConfig } from './config';

/** The small ResNet used by demos and tests: widths [16, 32, 64], CIFAR-style stem. */
export function tinyModelConfig(inputSize = 32): ModelConfig {
  return modelConfigSchema.parse({
    arch: 'tiny',
    inputSize,
    projectorHidden: 128,
    projectionDim: 64,
    metadataHidden: 64,
  });
}

/** ResNet-18; pass smaller `widths` (5 entries: stem + 4 stages) for CPU-sized runs. */
export function resnet18ModelConfig(inputSize = 224, widths?: number[]): ModelConfig {
  return modelConfigSchema.parse({
    arch: 'resnet18',
    inputSize,
    ...(widths ? { widths } : {}),
    projectorHidden: 1024,
    projectionDim: 256,
    metadataHidden: 256,
  });
}
