/** One named float32 tensor in row-major order (tfjs layout). */
export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** An ordered list of named tensors; order is meaningful (spec order). */
export type NamedTensors = NamedTensor[];
