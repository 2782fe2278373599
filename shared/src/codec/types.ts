/**
 * Element types the weight format can carry. The manifest names the dtype per tensor and
 * the decoder dispatches on it; every dtype decodes to float32.
 *
 * - `float32`: exact (models, and update deltas by default).
 * - `float16`: IEEE 754 binary16, round to nearest even; for update deltas.
 * - `int8`: symmetric, one float32 `scale` per tensor in the manifest, value = q · scale with
 *   q in [-127, 127]; for update deltas.
 */
export const DTYPE_BYTES = { float32: 4, float16: 2, int8: 1 } as const;
export type DType = keyof typeof DTYPE_BYTES;

/** One named tensor, row-major. */
export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Ordered tensors; order is part of the model's identity and is preserved by the codec. */
export type NamedTensors = NamedTensor[];

/** The name and shape a tensor must have (see `decodeWeights(bytes, expect)`). */
export interface TensorSpec {
  name: string;
  shape: number[];
}

export interface WeightManifestTensor {
  name: string;
  shape: number[];
  dtype: DType;
  /** Byte offset from the start of the data section (8-aligned). */
  offset: number;
  byteLength: number;
  /** `int8` only (and required there): the float32 step, value = q · scale. */
  scale?: number;
}

/** The JSON manifest at the head of an encoded weight file. */
export interface WeightManifest {
  format: 'fedssl-weights/1';
  tensors: WeightManifestTensor[];
  /** SHA-256 hex of the whole data section (tensors and their zero padding). */
  dataSha256: string;
}
