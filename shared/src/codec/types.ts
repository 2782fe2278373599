/**
 * Element types the weight format can carry. Only float32 today; the manifest names the
 * dtype per tensor and the decoder dispatches on it, so float16/int8 (with a scale) can be
 * added without a format bump for existing files.
 */
export const DTYPE_BYTES = { float32: 4 } as const;
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
}

/** The JSON manifest at the head of an encoded weight file. */
export interface WeightManifest {
  format: 'fedssl-weights/1';
  tensors: WeightManifestTensor[];
  /** SHA-256 hex of the whole data section (tensors and their zero padding). */
  dataSha256: string;
}
