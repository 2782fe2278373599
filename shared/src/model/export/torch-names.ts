import type { NamedTensors } from '../../codec/types';
import type { ModelConfig } from '../config';
import { sharedParamSpecs } from '../spec';
import { FedsslError } from '../../errors';

/**
 * Transposes a row-major tensor by a permutation of its axes (`perm[i]` = source axis of
 * output axis i).
 */
export function transpose(
  data: Float32Array,
  shape: readonly number[],
  perm: readonly number[],
): Float32Array {
  const outShape = perm.map((p) => shape[p]!);
  const rank = shape.length;
  const srcStrides = new Array<number>(rank);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    srcStrides[i] = s;
    s *= shape[i]!;
  }
  const strides = perm.map((p) => srcStrides[p]!);
  const out = new Float32Array(data.length);
  const idx = new Array<number>(rank).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let i = 0; i < rank; i++) src += idx[i]! * strides[i]!;
    out[o] = data[src]!;
    for (let i = rank - 1; i >= 0; i--) {
      if (++idx[i]! < outShape[i]!) break;
      idx[i] = 0;
    }
  }
  return out;
}

/**
 * The published shared weights renamed and laid out like a PyTorch `state_dict`:
 * - encoder tensors lose their `encoder.` prefix and map 1:1 onto torchvision's ResNet
 *   (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
 *   `layer2.0.downsample.0.weight`, …), with convolution kernels transposed from
 *   TensorFlow's HWIO to PyTorch's OIHW (`conv1` has 1 input channel: grayscale);
 * - projector and predictor keep their `projector.` / `predictor.` prefixes
 *   (`nn.Sequential(Linear, BatchNorm1d, ReLU, Linear)` indices 0, 1, 3), linear weights
 *   transposed from `[in, out]` to PyTorch's `[out, in]`.
 * torchvision's `bn*.num_batches_tracked` buffers and its `fc` layer are not part of the
 * encoder: load with `strict=False` (see docs/models.md).
 * @throws FedsslError MODEL_WEIGHTS_MISMATCH when `weights` lack a shared tensor of `config`.
 */
export function toTorchStateDict(config: ModelConfig, weights: NamedTensors): NamedTensors {
  const byName = new Map(weights.map((t) => [t.name, t]));
  return sharedParamSpecs(config).map((spec) => {
    const t = byName.get(spec.name);
    if (!t || t.shape.join(',') !== spec.shape.join(',')) {
      throw new FedsslError(
        'MODEL_WEIGHTS_MISMATCH',
        `weights lack tensor ${spec.name} [${spec.shape.join(',')}]`,
      );
    }
    const name = spec.name.startsWith('encoder.') ? spec.name.slice('encoder.'.length) : spec.name;
    if (spec.shape.length === 4) {
      // HWIO → OIHW
      const [h, w, i, o] = spec.shape as [number, number, number, number];
      return { name, shape: [o, i, h, w], data: transpose(t.data, spec.shape, [3, 2, 0, 1]) };
    }
    if (spec.shape.length === 2) {
      const [i, o] = spec.shape as [number, number];
      return { name, shape: [o, i], data: transpose(t.data, spec.shape, [1, 0]) };
    }
    return { name, shape: spec.shape.slice(), data: t.data };
  });
}
