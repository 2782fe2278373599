import type { NamedTensors, ParamSpec } from '@fedssl/shared/model';

/**
 * Adam's state as a site keeps it between rounds (`training.siteOptimizerState: 'keep'`):
 * the step count and both moments of every trainable variable, by parameter name, so a
 * saved state can be checked against the model it is loaded for.
 */
export interface SiteOptimizerState {
  /** Adam steps taken so far: the next step's bias correction continues from here. */
  step: number;
  /** First moments, one per trainable variable, named like the variable. */
  firstMoment: NamedTensors;
  /** Second moments, same names and order as {@link firstMoment}. */
  secondMoment: NamedTensors;
}

const shapeText = (shape: readonly number[]) => `[${shape.join(', ')}]`;
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Names the positional Adam state of the trainer's engine (`optimizer.iter`, then the first
 * moments, then the second moments, in `trainable` order).
 * @returns the named state, or a reason it cannot be named (it is then not kept).
 */
export function nameOptimizerState(
  positional: NamedTensors,
  trainable: readonly ParamSpec[],
): SiteOptimizerState | string {
  const n = trainable.length;
  if (positional.length !== 1 + 2 * n) {
    // tfjs gives a slot only to variables that received a gradient.
    return `the optimizer holds ${positional.length - 1} moment slots, the model has ${n} trainable variables (2 slots each)`;
  }
  const slot = (i: number) => {
    const t = positional[1 + i]!;
    const spec = trainable[i % n]!;
    return sameShape(t.shape, spec.shape)
      ? { name: spec.name, shape: spec.shape.slice(), data: t.data }
      : null;
  };
  const moments = Array.from({ length: 2 * n }, (_, i) => slot(i));
  const bad = moments.findIndex((m) => m === null);
  if (bad >= 0) {
    return `optimizer slot ${bad} has shape ${shapeText(positional[1 + bad]!.shape)}, '${trainable[bad % n]!.name}' has ${shapeText(trainable[bad % n]!.shape)}`;
  }
  return {
    step: positional[0]!.data[0]!,
    firstMoment: moments.slice(0, n) as NamedTensors,
    secondMoment: moments.slice(n) as NamedTensors,
  };
}

/**
 * The positional Adam state the trainer's engine restores, from a kept state, if it was saved
 * for exactly these trainable variables (names and shapes).
 * @returns the positional state, or why the kept state does not fit (architecture, widths or
 *   metadata classes changed since it was saved).
 */
export function positionalOptimizerState(
  kept: SiteOptimizerState,
  trainable: readonly ParamSpec[],
): NamedTensors | string {
  if (!Number.isInteger(kept.step) || kept.step < 0) return `the kept step count ${kept.step} is not valid`;
  if (kept.firstMoment.length !== trainable.length || kept.secondMoment.length !== trainable.length) {
    return `it was saved for ${kept.firstMoment.length} trainable variables, the model has ${trainable.length}`;
  }
  const first = new Map(kept.firstMoment.map((t) => [t.name, t]));
  const second = new Map(kept.secondMoment.map((t) => [t.name, t]));
  const out: NamedTensors = [{ name: 'optimizer.iter', shape: [], data: Float32Array.of(kept.step) }];
  for (const [which, byName] of [
    ['first', first],
    ['second', second],
  ] as const) {
    for (const spec of trainable) {
      const t = byName.get(spec.name);
      if (!t) return `it has no ${which} moment for '${spec.name}'`;
      if (!sameShape(t.shape, spec.shape)) {
        return `its ${which} moment for '${spec.name}' has shape ${shapeText(t.shape)}, the model ${shapeText(spec.shape)}`;
      }
      out.push({ name: `optimizer.slot.${out.length - 1}`, shape: spec.shape.slice(), data: t.data });
    }
  }
  return out;
}
