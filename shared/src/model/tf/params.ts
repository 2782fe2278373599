import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensors } from '../../codec/types';
import { FedsslError } from '../../errors';
import { shapeSize, type ParamSpec } from '../spec';

/** Parameters by spec name; values may be variables or plain tensors. */
export type ParamMap = Map<string, tf.Tensor>;

/**
 * Check that `tensors` has exactly the names and shapes of `specs` (any order) and
 * return them by name.
 * @throws FedsslError MODEL_WEIGHTS_MISMATCH on a missing, extra or misshapen tensor.
 */
export function matchWeights(
  tensors: NamedTensors,
  specs: readonly ParamSpec[],
): Map<string, NamedTensors[number]> {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  if (byName.size !== tensors.length) {
    throw new FedsslError('MODEL_WEIGHTS_MISMATCH', 'weights contain duplicate tensor names');
  }
  for (const spec of specs) {
    const t = byName.get(spec.name);
    if (!t)
      throw new FedsslError('MODEL_WEIGHTS_MISMATCH', `weights lack tensor '${spec.name}'`, {
        name: spec.name,
      });
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `tensor '${spec.name}' has shape [${t.shape}], expected [${spec.shape}]`,
        {
          name: spec.name,
        },
      );
    }
    if (t.data.length !== shapeSize(spec.shape)) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `tensor '${spec.name}' has ${t.data.length} values, expected ${shapeSize(spec.shape)}`,
      );
    }
  }
  if (byName.size !== specs.length) {
    const expected = new Set(specs.map((s) => s.name));
    const extra = tensors.find((t) => !expected.has(t.name));
    throw new FedsslError(
      'MODEL_WEIGHTS_MISMATCH',
      `weights contain unexpected tensor '${extra?.name ?? '?'}'`,
    );
  }
  return byName;
}

/**
 * Create one `tf.Variable` per spec from `tensors` (trainable as the spec says).
 * Variables are unnamed so several copies (online, target) can coexist; the caller
 * owns them and must dispose them ({@link disposeParams}).
 * @throws FedsslError MODEL_WEIGHTS_MISMATCH when names or shapes differ from `specs`.
 */
export function createVariables(
  tensors: NamedTensors,
  specs: readonly ParamSpec[],
): Map<string, tf.Variable> {
  const byName = matchWeights(tensors, specs);
  const vars = new Map<string, tf.Variable>();
  for (const spec of specs) {
    const t = byName.get(spec.name)!;
    vars.set(
      spec.name,
      tf.tidy(() => tf.variable(tf.tensor(t.data, spec.shape, 'float32'), spec.trainable)),
    );
  }
  return vars;
}

/** Copy the values of `params` back to plain Float32Arrays, in `specs` order. */
export function readWeights(
  params: ReadonlyMap<string, tf.Tensor>,
  specs: readonly ParamSpec[],
): NamedTensors {
  return specs.map((spec) => {
    const t = params.get(spec.name);
    if (!t)
      throw new FedsslError('MODEL_WEIGHTS_MISMATCH', `parameter '${spec.name}' is missing`, {
        name: spec.name,
      });
    return {
      name: spec.name,
      shape: spec.shape.slice(),
      data: Float32Array.from(t.dataSync() as Float32Array),
    };
  });
}

/** Dispose every tensor of a parameter map. */
export function disposeParams(params: ReadonlyMap<string, tf.Tensor>): void {
  for (const t of params.values()) t.dispose();
}

/** Look up a parameter; a missing one is a programming error in the spec/forward pairing. */
export function param(params: ReadonlyMap<string, tf.Tensor>, name: string): tf.Tensor {
  const t = params.get(name);
  if (!t) throw new FedsslError('MODEL_WEIGHTS_MISMATCH', `parameter '${name}' is missing`, { name });
  return t;
}
