/**
 * `@fedssl/shared/codec`: model weights ↔ self-describing bytes, and the tensor arithmetic
 * used to form and validate updates. No TensorFlow, no tweetnacl.
 */
export {
  DTYPE_BYTES,
  type DType,
  type NamedTensor,
  type NamedTensors,
  type TensorSpec,
  type WeightManifest,
  type WeightManifestTensor,
} from './types';
export {
  MAX_MANIFEST_BYTES,
  MAX_TENSOR_NAME_LENGTH,
  MAX_TENSOR_RANK,
  WEIGHTS_FORMAT,
  WEIGHTS_MAGIC,
  createWeightsHasher,
  decodeWeights,
  encodeWeights,
  readWeightManifest,
  tensorSpecs,
  weightsSha256,
  type DecodeOptions,
  type DecodedWeights,
  type EncodeOptions,
} from './weights';
export { FLOAT16_MAX, float16Bits, float16Value } from './element-codec';
export { add, allFinite, assertSameLayout, l2Norm, parameterCount, scale, subtract } from './tensor-math';
