import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * fedssl's own convolution kernels in wasm SIMD (`site-agent/native/simd-kernels.c`, built into
 * the committed `simd-kernels.wasm` beside it): the forward convolution and the filter gradient.
 *
 * Why not XNNPACK (tfjs-backend-wasm's engine) for these: it has no dW, and dW expressed as its
 * forward convolution makes dy the filter, which XNNPACK repacks on every call while its GEMM
 * streams the whole N·OH·OW reduction for every output tile (2.2–2.9× slower than this dW,
 * measured). Its forward convolution also packs the filter on every call, and training changes
 * the filter every step. These kernels read their operands as they are.
 *
 * The module is instantiated on tfjs-backend-wasm's own memory: arguments are byte offsets of
 * tensors in that heap, results are written into tensors the caller allocated there. Nothing is
 * copied, and the module owns no memory (build.sh checks).
 */

/** Where the built module lives, from `src/train` (tests) and `dist/train` (the build) alike. */
export const SIMD_KERNELS_WASM = path.resolve(__dirname, '..', '..', 'native', 'simd-kernels.wasm');

/** A convolution's geometry, NHWC input [n, h, w, cin], HWIO filter [kh, kw, cin, cout], no dilation. */
export interface ConvShape {
  n: number;
  h: number;
  w: number;
  cin: number;
  outHeight: number;
  outWidth: number;
  cout: number;
  kh: number;
  kw: number;
  strideHeight: number;
  strideWidth: number;
  /** Leading padding (rows above, columns left); the trailing padding follows from the output size. */
  top: number;
  left: number;
}

/** The part of the WebAssembly JS API used here (the project's `lib` has no DOM types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
  Memory: new (descriptor: { initial: number }) => WasmMemory;
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Both kernels take three operand addresses, then the geometry as ints (argument order: simd-kernels.c). */
type Kernel = (...args: number[]) => void;
interface Exports {
  conv_filter_grad: Kernel;
  conv2d: Kernel;
  channel_op: Kernel;
}

/** An element-wise op of x [outer, inner, c] with one value per channel, shared or one row per outer index. */
export interface ChannelOpShape {
  outer: number;
  inner: number;
  c: number;
  /** v is [outer, c] (group norm's per-sample scale/shift) rather than [c]. */
  perOuter: boolean;
}
const CHANNEL_OPS = { mul: 0, add: 1, sub: 2 } as const;

/** Byte offsets of a filter gradient's operands in the memory the module was loaded on. */
export interface FilterGradAt {
  x: number;
  dy: number;
  dw: number;
}
/** Byte offsets of a convolution's operands in the memory the module was loaded on. */
export interface ConvAt {
  x: number;
  filter: number;
  /** Scratch of kh·kw·cin·cout floats, 16-byte aligned: the filter rearranged by output-channel tile. */
  packed: number;
  y: number;
}

export class SimdKernels {
  private constructor(private readonly exports: Exports) {}

  /**
   * Loads the module onto `memory` (tfjs-backend-wasm's heap); undefined (callers keep the
   * XNNPACK path) where the file is missing or this runtime cannot instantiate it.
   */
  static load(memory: WasmMemory, file = SIMD_KERNELS_WASM): SimdKernels | undefined {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch {
      return undefined;
    }
    if (!Wasm.validate(bytes)) return undefined;
    try {
      const instance = new Wasm.Instance(new Wasm.Module(bytes), { env: { memory } });
      return new SimdKernels(instance.exports as unknown as Exports);
    } catch {
      return undefined; // e.g. a shared (threaded) memory the module was not built for
    }
  }

  /** dW runs here when the input channels fill whole SIMD lanes (not the stem's single channel). */
  static supportsFilterGrad(s: Pick<ConvShape, 'cin' | 'cout'>): boolean {
    return s.cin % 4 === 0 && s.cout % 4 === 0;
  }

  /** The forward convolution runs here for any input channel count. */
  static supportsConv(s: Pick<ConvShape, 'cout'>): boolean {
    return s.cout % 4 === 0;
  }

  /** dW [kh, kw, cin, cout] of x [n, h, w, cin] and dy [n, oh, ow, cout], written at `at.dw`. */
  filterGrad(at: FilterGradAt, s: ConvShape): void {
    if (!SimdKernels.supportsFilterGrad(s))
      throw new Error(`SIMD dW needs channels in multiples of 4, got cin ${s.cin}, cout ${s.cout}`);
    checkAligned(at.x, at.dy, at.dw);
    this.exports.conv_filter_grad(at.x, at.dy, at.dw, ...geometry(s));
  }

  /**
   * y [n, oh, ow, cout] = conv(x [n, h, w, cin], filter [kh, kw, cin, cout]) with the shape's
   * strides and zero padding (a trailing padding may be negative: unused trailing rows/columns).
   */
  conv2d(at: ConvAt, s: ConvShape): void {
    if (!SimdKernels.supportsConv(s))
      throw new Error(`SIMD conv2d needs output channels in multiples of 4, got ${s.cout}`);
    checkAligned(at.x, at.filter, at.y);
    if (at.packed % 16 !== 0)
      throw new Error(`SIMD conv2d: packing scratch at ${at.packed} is not 16-byte aligned`);
    this.exports.conv2d(at.x, at.filter, at.packed, at.y, ...geometry(s));
  }

  /** y = x ∘ v (op: x·v, x + v or x − v) with v one value per channel; x, v, y at the given offsets. */
  channelOp(at: { x: number; v: number; y: number }, s: ChannelOpShape, op: keyof typeof CHANNEL_OPS): void {
    checkAligned(at.x, at.v, at.y);
    this.exports.channel_op(at.x, at.v, at.y, s.outer, s.inner, s.c, s.perOuter ? s.c : 0, CHANNEL_OPS[op]);
  }
}

/** The geometry arguments the convolution kernels take after their operand addresses, in simd-kernels.c's order. */
function geometry(s: ConvShape): number[] {
  return [
    s.n,
    s.h,
    s.w,
    s.cin,
    s.outHeight,
    s.outWidth,
    s.cout,
    s.kh,
    s.kw,
    s.strideHeight,
    s.strideWidth,
    s.top,
    s.left,
  ];
}

/** Float32 operands must be 4-byte aligned (the heap's allocator gives 16 or more). */
function checkAligned(...offsets: number[]): void {
  for (const o of offsets)
    if (!Number.isInteger(o) || o < 0 || o % 4 !== 0)
      throw new Error(`SIMD kernel: operand offset ${o} is not a float32 address`);
}
