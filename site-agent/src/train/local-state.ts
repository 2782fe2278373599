import { decodeWeights, encodeWeights } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import type { NamedTensors } from '@fedssl/shared/model';
import type { SiteOptimizerState } from './optimizer-state';

/**
 * What a site keeps between rounds and NEVER uploads: the BYOL target network
 * (encoder + projector, EMA of the online one, same names as the shared specs) and the
 * metadata head, whose classes are this site's pseudonymous patients.
 */
export interface LocalState {
  target: NamedTensors;
  metadataHead: NamedTensors;
  metadataClasses: number;
  /**
   * The online network's shared weights at the end of the previous round (kept only for
   * FedEMA, which starts the next round from an EMA of these and the new global model).
   */
  online?: NamedTensors;
  /**
   * Adam's moments and step count at the end of the previous round (kept only with
   * `training.siteOptimizerState: 'keep'`, which continues the next round from them).
   */
  optimizer?: SiteOptimizerState;
}

const TARGET_PREFIX = 'target.';
const HEAD_PREFIX = 'metadata_head.';
const ONLINE_PREFIX = 'online.';
const CLASSES_NAME = 'local_state.metadata_classes';
const OPTIMIZER_STEP_NAME = 'optimizer.step';
const FIRST_MOMENT_PREFIX = 'optimizer.m.';
const SECOND_MOMENT_PREFIX = 'optimizer.v.';

const prefixed = (prefix: string, tensors: NamedTensors) =>
  tensors.map((t) => ({ name: prefix + t.name, shape: t.shape, data: t.data }));

/**
 * Serialize local state with the weights codec (`fedssl-weights/1`): target tensors are
 * prefixed `target.`, the head keeps its `metadata_head.*` names, and the class count is
 * a one-element tensor; a kept optimizer is `optimizer.step` and `optimizer.m.*` /
 * `optimizer.v.*` by parameter name. For the site's own disk only.
 */
export function encodeLocalState(state: LocalState): Uint8Array {
  return encodeWeights([
    ...prefixed(TARGET_PREFIX, state.target),
    ...state.metadataHead,
    ...prefixed(ONLINE_PREFIX, state.online ?? []),
    { name: CLASSES_NAME, shape: [1], data: Float32Array.of(state.metadataClasses) },
    ...(state.optimizer
      ? [
          { name: OPTIMIZER_STEP_NAME, shape: [1], data: Float32Array.of(state.optimizer.step) },
          ...prefixed(FIRST_MOMENT_PREFIX, state.optimizer.firstMoment),
          ...prefixed(SECOND_MOMENT_PREFIX, state.optimizer.secondMoment),
        ]
      : []),
  ]);
}

/**
 * Inverse of {@link encodeLocalState}.
 * @throws FedsslError CODEC_* for corrupt bytes, CODEC_MALFORMED for an unexpected tensor.
 */
export function decodeLocalState(bytes: Uint8Array): LocalState {
  const { tensors } = decodeWeights(bytes);
  const state: LocalState = { target: [], metadataHead: [], metadataClasses: -1 };
  let step: number | undefined;
  const firstMoment: NamedTensors = [];
  const secondMoment: NamedTensors = [];
  for (const t of tensors) {
    if (t.name.startsWith(TARGET_PREFIX))
      state.target.push({ ...t, name: t.name.slice(TARGET_PREFIX.length) });
    else if (t.name.startsWith(HEAD_PREFIX)) state.metadataHead.push(t);
    else if (t.name.startsWith(ONLINE_PREFIX))
      (state.online ??= []).push({ ...t, name: t.name.slice(ONLINE_PREFIX.length) });
    else if (t.name === CLASSES_NAME && t.data.length === 1) state.metadataClasses = t.data[0]!;
    else if (t.name === OPTIMIZER_STEP_NAME && t.data.length === 1) step = t.data[0]!;
    else if (t.name.startsWith(FIRST_MOMENT_PREFIX))
      firstMoment.push({ ...t, name: t.name.slice(FIRST_MOMENT_PREFIX.length) });
    else if (t.name.startsWith(SECOND_MOMENT_PREFIX))
      secondMoment.push({ ...t, name: t.name.slice(SECOND_MOMENT_PREFIX.length) });
    else throw new FedsslError('CODEC_MALFORMED', `local state contains unexpected tensor '${t.name}'`);
  }
  if (!Number.isInteger(state.metadataClasses) || state.metadataClasses < 0) {
    throw new FedsslError('CODEC_MALFORMED', 'local state lacks a valid metadata class count');
  }
  if (step !== undefined) state.optimizer = { step, firstMoment, secondMoment };
  else if (firstMoment.length > 0 || secondMoment.length > 0) {
    throw new FedsslError('CODEC_MALFORMED', 'local state has optimizer moments but no optimizer.step');
  }
  return state;
}
