import type { NamedTensors } from '../codec/types';
import type { ModelConfig } from './config';
import { shapeSize, sharedParamSpecs, type ParamSpec } from './spec';

/**
 * mulberry32: a tiny 32-bit PRNG. Integer-only arithmetic, so the stream is identical
 * on every JavaScript engine and machine. Returns floats in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Standard normal samples by Box–Muller over {@link mulberry32}. V8's Math.log/cos/sqrt
 * are the same fdlibm ports on every platform, so results are bit-identical across
 * machines running Node.
 */
export function gaussian(rand: () => number): () => number {
  return () => {
    const u1 = 1 - rand(); // (0, 1]: log stays finite
    const u2 = rand();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
}

function fans(shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length === 4) {
    const receptive = shape[0]! * shape[1]!;
    return { fanIn: receptive * shape[2]!, fanOut: receptive * shape[3]! };
  }
  if (shape.length === 2) return { fanIn: shape[0]!, fanOut: shape[1]! };
  return { fanIn: shape[0] ?? 1, fanOut: shape[0] ?? 1 };
}

/**
 * Fill tensors for `specs` from one seeded stream, in spec order. He-normal uses fan-in
 * (std √(2/fanIn)); Glorot-uniform uses limit √(6/(fanIn+fanOut)).
 */
export function initWeights(specs: readonly ParamSpec[], seed: number): NamedTensors {
  const rand = mulberry32(seed);
  const normal = gaussian(rand);
  return specs.map((spec) => {
    const data = new Float32Array(shapeSize(spec.shape));
    const { fanIn, fanOut } = fans(spec.shape);
    switch (spec.init) {
      case 'ones':
        data.fill(1);
        break;
      case 'zeros':
        break;
      case 'heNormal': {
        const std = Math.sqrt(2 / fanIn);
        for (let i = 0; i < data.length; i++) data[i] = normal() * std;
        break;
      }
      case 'glorotUniform': {
        const limit = Math.sqrt(6 / (fanIn + fanOut));
        for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * limit;
        break;
      }
    }
    return { name: spec.name, shape: spec.shape.slice(), data };
  });
}

/**
 * Version-0 global weights for the shared parameters, pure JS and bit-identical on
 * every machine for a given `seed` (the coordinator uses it without TensorFlow).
 * @example
 * const v0 = initSharedWeights(tinyModelConfig(32), 42);
 */
export function initSharedWeights(config: ModelConfig, seed: number): NamedTensors {
  return initWeights(sharedParamSpecs(config), seed);
}
