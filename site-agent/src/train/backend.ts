import * as tf from '@tensorflow/tfjs-core';
import './gradients';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import type { Logger } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import { registerWasmTrainingKernels, simdKernelsInUse } from './wasm-kernels';

/** Which backend the operator asks for; `auto` picks the fastest that loads. */
export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

/** The backend that runs, as reported to logs and the coordinator. */
export interface BackendInfo {
  name: string;
  accelerator: 'gpu' | 'cpu';
  /** Native libtensorflow (tfjs-node / tfjs-node-gpu) rather than wasm or JS. */
  native: boolean;
}

interface Skip {
  backend: string;
  reason: string;
}

/** Load an optional native package; they register the 'tensorflow' backend when present. */
function tryRequire(name: string): string | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require(name);
    return undefined;
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === 'MODULE_NOT_FOUND'
      ? `${name} is not installed`
      : `${name} failed to load: ${(e as Error).message}`;
  }
}

async function activate(name: string): Promise<boolean> {
  try {
    const ok = await tf.setBackend(name);
    if (ok) await tf.ready();
    return ok && tf.getBackend() === name;
  } catch {
    return false;
  }
}

/**
 * Choose and initialise the TensorFlow.js backend. `auto` tries, in order,
 * `@tensorflow/tfjs-node-gpu`, `@tensorflow/tfjs-node` (optional native packages),
 * `wasm` (with the project's training kernels registered first), then `cpu`. The model
 * code is the same on all of them. Awaits `tf.ready()`: create tensors only after this.
 * Logs one info line saying what runs and why the others were skipped.
 * @throws FedsslError BACKEND_UNAVAILABLE when an explicitly requested backend cannot start.
 */
export async function selectBackend(
  logger: Logger,
  preference: BackendPreference = 'auto',
): Promise<BackendInfo> {
  const skipped: Skip[] = [];
  const want = (b: BackendPreference) => preference === 'auto' || preference === b;

  if (want('tensorflow')) {
    for (const [pkg, accelerator] of [
      ['@tensorflow/tfjs-node-gpu', 'gpu'],
      ['@tensorflow/tfjs-node', 'cpu'],
    ] as const) {
      const failure = tryRequire(pkg);
      if (failure) {
        skipped.push({ backend: pkg, reason: failure });
        continue;
      }
      if (await activate('tensorflow')) {
        const info: BackendInfo = { name: 'tensorflow', accelerator, native: true };
        logger.info({ backend: info, skipped }, `tfjs backend: tensorflow via ${pkg}`);
        return info;
      }
      skipped.push({ backend: pkg, reason: 'tensorflow backend did not initialise' });
    }
    if (preference === 'tensorflow') {
      throw new FedsslError(
        'BACKEND_UNAVAILABLE',
        'backend "tensorflow" requested but neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node loads',
        { skipped },
      );
    }
  }

  if (want('wasm')) {
    registerWasmTrainingKernels();
    if (await activate('wasm')) {
      const info: BackendInfo = { name: 'wasm', accelerator: 'cpu', native: false };
      const simd = simdKernelsInUse();
      logger.info(
        { backend: info, skipped, simdKernels: simd },
        simd.length
          ? `tfjs backend: wasm (XNNPACK, project training kernels; fedssl SIMD kernels: ${simd.join(', ')})`
          : 'tfjs backend: wasm (XNNPACK, project training kernels; fedssl SIMD kernels not loaded: site-agent/native/simd-kernels.wasm missing or FEDSSL_SIMD_KERNELS=none, training is slower)',
      );
      return info;
    }
    skipped.push({ backend: 'wasm', reason: 'wasm backend did not initialise' });
    if (preference === 'wasm')
      throw new FedsslError('BACKEND_UNAVAILABLE', 'backend "wasm" requested but it did not initialise', {
        skipped,
      });
  }

  if (await activate('cpu')) {
    const info: BackendInfo = { name: 'cpu', accelerator: 'cpu', native: false };
    logger.info({ backend: info, skipped }, 'tfjs backend: cpu (pure JavaScript, slow)');
    return info;
  }
  throw new FedsslError('BACKEND_UNAVAILABLE', 'no TensorFlow.js backend could be initialised', { skipped });
}
