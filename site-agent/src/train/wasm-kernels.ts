import * as tf from '@tensorflow/tfjs-core';
import type {
  Conv2DAttrs,
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  KernelFunc,
  NamedAttrMap,
  TensorInfo,
} from '@tensorflow/tfjs-core';
import { type ConvShape, SimdKernels, type WasmMemory } from './simd-kernels';

/**
 * Training kernels missing from (or too slow in) tfjs-backend-wasm 4.22, expressed as
 * the wasm backend's own forward kernels (XNNPACK convolution and matmul), so a conv
 * net trains on wasm instead of throwing on the first backward pass.
 *
 * Every intermediate produced here is released with `backend.disposeData` as soon as
 * it is consumed: these run inside the engine's kernel dispatch, outside any tidy.
 */

const BACKEND = 'wasm';

/** Minimal view of the wasm backend used by the kernels (it is not exported as a type we can import cheaply). */
interface WasmBackendLike {
  disposeData(dataId: object, force?: boolean): boolean;
  incRef(dataId: object): void;
  /** A Float32Array view of a tensor's bytes in the wasm heap (invalid once the heap grows). */
  typedArrayFromHeap(t: TensorInfo): Float32Array;
  /** A new tensor in the wasm heap holding `values` (uninitialised without them). */
  makeOutput(shape: number[], dtype: 'float32', memoryOffset?: number, values?: Float32Array): TensorInfo;
  /** Where each tensor's bytes start in the heap. */
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  /** The emscripten module; `asm.memory` is the heap's WebAssembly.Memory. */
  wasm: { asm?: { memory?: WasmMemory } };
}

/** Byte offset of a tensor's data in the wasm heap. */
function heapOffset(b: WasmBackendLike, t: TensorInfo): number {
  const d = b.dataIdMap.get(t.dataId);
  if (!d) throw new Error('wasm kernels: tensor data is not in the wasm heap');
  return d.memoryOffset;
}

interface Run {
  (name: string, inputs: Record<string, TensorInfo>, attrs?: NamedAttrMap): TensorInfo;
  /** A small tensor filled from JavaScript (a rearranged filter), disposed like the others. */
  constant(shape: number[], values: Float32Array): TensorInfo;
}

function runner(backend: WasmBackendLike, scratch: TensorInfo[]): Run {
  const run = (name: string, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap = {}) => {
    const kernel = tf.getKernel(name, BACKEND);
    if (!kernel) throw new Error(`wasm backend has no kernel ${name}`);
    const out = kernel.kernelFunc({
      inputs,
      backend: backend as unknown as tf.KernelBackend,
      attrs,
    }) as TensorInfo;
    scratch.push(out);
    return out;
  };
  return Object.assign(run, {
    constant: (shape: number[], values: Float32Array) => {
      const out = backend.makeOutput(shape, 'float32', undefined, values);
      scratch.push(out);
      return out;
    },
  });
}

/** Run `body` with a scratch list; dispose every scratch tensor except the result. */
function withScratch(backend: WasmBackendLike, body: (run: Run) => TensorInfo): TensorInfo {
  const scratch: TensorInfo[] = [];
  const result = body(runner(backend, scratch));
  for (const t of scratch) if (t !== result) backend.disposeData(t.dataId);
  return result;
}

function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: Pick<Conv2DAttrs, 'strides' | 'pad' | 'dataFormat' | 'dimRoundingMode'>,
) {
  if (attrs.dataFormat !== 'NHWC')
    throw new Error(`wasm training kernels support NHWC only, got ${attrs.dataFormat}`);
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
}

type SimdKernelName = 'conv' | 'dw' | 'channel';
const simdModules = new WeakMap<WasmMemory, SimdKernels | undefined>();
let wantedSimd: string[] | undefined;
/**
 * The SIMD convolution kernels on this backend's heap, loaded once per heap; undefined where
 * the module is not available (XNNPACK then runs everything). `FEDSSL_SIMD_KERNELS` (default
 * `conv,dw,channel`; `none`), read at the first kernel call, picks which ones run, for A/B benchmarks.
 */
function simdKernels(backend: WasmBackendLike, which: SimdKernelName): SimdKernels | undefined {
  // Read once: this runs on every convolution and channel op of every training step.
  wantedSimd ??= (process.env.FEDSSL_SIMD_KERNELS ?? 'conv,dw,channel').split(',').map((k) => k.trim());
  const memory = backend.wasm.asm?.memory;
  if (!wantedSimd.includes(which) || !memory) return undefined;
  if (!simdModules.has(memory)) simdModules.set(memory, SimdKernels.load(memory));
  return simdModules.get(memory);
}

/**
 * Which of fedssl's SIMD convolution kernels the initialised wasm backend runs (empty: the
 * module did not load, or `FEDSSL_SIMD_KERNELS=none`; XNNPACK then runs every convolution).
 */
export function simdKernelsInUse(): SimdKernelName[] {
  const backend = tf.findBackend(BACKEND) as unknown as WasmBackendLike | null;
  if (!backend) return [];
  return (['conv', 'dw', 'channel'] as const).filter((k) => simdKernels(backend, k) !== undefined);
}

/** The geometry the SIMD kernels take, from tfjs's convolution info. */
function simdShape(info: ReturnType<typeof convInfo>): ConvShape {
  return {
    n: info.batchSize,
    h: info.inHeight,
    w: info.inWidth,
    cin: info.inChannels,
    outHeight: info.outHeight,
    outWidth: info.outWidth,
    cout: info.outChannels,
    kh: info.filterHeight,
    kw: info.filterWidth,
    strideHeight: info.strideHeight,
    strideWidth: info.strideWidth,
    top: info.padInfo.top,
    left: info.padInfo.left,
  };
}

/**
 * Conv2D through fedssl's SIMD kernel (NHWC, no dilation, output channels in multiples of 4),
 * else the backend's XNNPACK kernel. XNNPACK packs the filter on every call, and in training
 * the filter changes every step; the input gradients below are Conv2D calls too.
 */
function conv2DKernel(original: tf.KernelConfig): tf.KernelConfig {
  return {
    ...original,
    kernelFunc: (args) => {
      const { x, filter } = args.inputs as { x: TensorInfo; filter: TensorInfo };
      const a = args.attrs as unknown as Conv2DAttrs;
      const b = args.backend as unknown as WasmBackendLike;
      const simd = simdKernels(b, 'conv');
      const dilated = [a.dilations].flat().some((d) => d !== 1);
      if (
        simd &&
        a.dataFormat === 'NHWC' &&
        !dilated &&
        x.dtype === 'float32' &&
        filter.dtype === 'float32'
      ) {
        const info = convInfo(x.shape, filter.shape, a);
        if (SimdKernels.supportsConv({ cout: info.outChannels })) {
          const y = b.makeOutput(
            [info.batchSize, info.outHeight, info.outWidth, info.outChannels],
            'float32',
          );
          // The packed filter: a scratch tensor, its start rounded up to 16 bytes (the heap gives 8).
          const scratch = b.makeOutput([filter.shape.reduce((p, d) => p * d, 1) + 4], 'float32');
          const packed = Math.ceil(heapOffset(b, scratch) / 16) * 16;
          simd.conv2d(
            { x: heapOffset(b, x), filter: heapOffset(b, filter), packed, y: heapOffset(b, y) },
            simdShape(info),
          );
          b.disposeData(scratch.dataId);
          return y;
        }
      }
      return original.kernelFunc(args);
    },
  };
}

/**
 * dW: fedssl's SIMD kernel (`simd-kernels.ts`) where the channels fit its lanes, else
 * ONE XNNPACK forward convolution (measured ~6× faster on wasm than im2col + BatchMatMul,
 * whose transposed-A path is not XNNPACK's): treat input channels as the batch and the
 * batch as channels, x → [Cin, H, W, N], and use dy → [OH, OW, N, Cout] as the filter,
 * dilated by the stride. The result [Cin, kh, kw, Cout] is transposed back to HWIO.
 */
const conv2DBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const a = attrs as unknown as Conv2DBackpropFilterAttrs;
  const info = convInfo(x.shape, a.filterShape as number[], a);
  const {
    filterHeight: kh,
    filterWidth: kw,
    strideHeight: sh,
    strideWidth: sw,
    outHeight: oh,
    outWidth: ow,
  } = info;
  const { top, left } = info.padInfo;
  const [n, h, w, cin] = x.shape as [number, number, number, number];
  const b = backend as unknown as WasmBackendLike;
  const cout = info.outChannels;
  const simd = simdKernels(b, 'dw');
  if (
    simd &&
    SimdKernels.supportsFilterGrad({ cin, cout }) &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1
  ) {
    const dw = b.makeOutput([kh, kw, cin, cout], 'float32');
    simd.filterGrad({ x: heapOffset(b, x), dy: heapOffset(b, dy), dw: heapOffset(b, dw) }, simdShape(info));
    return dw;
  }
  return withScratch(b, (run) => {
    // x → [Cin, H, W, N] in two cheap steps: a 2-D transpose [N, H·W·Cin] → [H·W·Cin, N],
    // then [H·W, Cin, N] → [Cin, H·W, N] (moves whole rows of N). The direct 4-D
    // permutation [3, 1, 2, 0] measured 1.6× slower.
    const x2 = run('Reshape', { x }, { shape: [n, h * w * cin] });
    const x2T = run('Transpose', { x: x2 }, { perm: [1, 0] });
    const x3 = run('Reshape', { x: x2T }, { shape: [h * w, cin, n] });
    const x3T = run('Transpose', { x: x3 }, { perm: [1, 0, 2] });
    let xT = run('Reshape', { x: x3T }, { shape: [cin, h, w, n] });
    // Rows/columns the forward conv actually read; a negative pad means trailing input unused.
    let bottom = kh + (oh - 1) * sh - h - top;
    let right = kw + (ow - 1) * sw - w - left;
    if (bottom < 0 || right < 0) {
      // Cut them here, where a kept row is one run of W'·N floats: the backend's Slice copies
      // row by row in JavaScript (on x itself, runs of Cin floats: 100 ms at 64 px, measured).
      const keepH = h + Math.min(0, bottom);
      const keepW = w + Math.min(0, right);
      const x3v = run('Reshape', { x: xT }, { shape: [cin, h, w * n] });
      const cut = run('Slice', { x: x3v }, { begin: [0, 0, 0], size: [cin, keepH, keepW * n] });
      xT = run('Reshape', { x: cut }, { shape: [cin, keepH, keepW, n] });
      bottom = Math.max(0, bottom);
      right = Math.max(0, right);
    }
    const dyT = run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] });
    const out = run('Conv2D', { x: xT, filter: dyT }, {
      strides: [1, 1],
      pad: [
        [0, 0],
        [top, bottom],
        [left, right],
        [0, 0],
      ],
      dilations: [sh, sw],
      dataFormat: 'NHWC',
    } as unknown as NamedAttrMap);
    return run('Transpose', { x: out }, { perm: [1, 2, 0, 3] });
  });
};

/**
 * Inserts s−1 zeros after every element of the middle axis of `x` viewed as [outer, ·, inner]
 * (a reshape to a unit axis, a pad, and a reshape to `shape`): the zero-upsampling of dy.
 */
function insertZeros(
  run: Run,
  x: TensorInfo,
  outer: number,
  inner: number,
  s: number,
  shape: number[],
): TensorInfo {
  const r = run('Reshape', { x }, { shape: [outer, 1, inner] });
  const p = run(
    'PadV2',
    { x: r },
    {
      paddings: [
        [0, 0],
        [0, s - 1],
        [0, 0],
      ],
      constantValue: 0,
    },
  );
  return run('Reshape', { x: p }, { shape });
}

/**
 * A stride-1 forward convolution with explicit padding [top, bottom, left, right]; a negative
 * bottom/right pad cuts that many trailing rows/columns of `x` first.
 */
function convStride1(run: Run, x: TensorInfo, filter: TensorInfo, pads: number[]): TensorInfo {
  const [top, bottom, left, right] = pads as [number, number, number, number];
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const input =
    bottom < 0 || right < 0
      ? run(
          'Slice',
          { x },
          { begin: [0, 0, 0, 0], size: [n, h + Math.min(0, bottom), w + Math.min(0, right), c] },
        )
      : x;
  return run('Conv2D', { x: input, filter }, {
    strides: [1, 1],
    pad: [
      [0, 0],
      [top, Math.max(0, bottom)],
      [left, Math.max(0, right)],
      [0, 0],
    ],
    dilations: [1, 1],
    dataFormat: 'NHWC',
  } as unknown as NamedAttrMap);
}

/** Taps of one axis of a stride-s input gradient split by output phase (see `inputGradByPhase`). */
function phaseTaps(k: number, s: number, pad: number): { jMin: number; taps: number } {
  // Output position i = s·m + p receives dy[m + j]·W[p + pad − s·j] for every j that keeps the tap inside the filter.
  const jMin = Math.ceil((pad - (k - 1)) / s);
  const jMax = Math.floor((s - 1 + pad) / s);
  return { jMin, taps: jMax - jMin + 1 };
}

/**
 * dx of a stride-s convolution (s > 1 on both axes) without zero-upsampling dy: output
 * pixel (s·m + ph, s·m' + pw) only meets the filter taps ≡ ph, pw (mod s), so all s² phases
 * are ONE stride-1 convolution of dy itself with a small filter whose s²·Cin output
 * channels are the phases, followed by the pixel shuffle (DepthToSpace's layout). The zero-upsampled
 * form convolves s² times as many pixels, most of them zeros (measured 3.6× a forward conv).
 */
function inputGradByPhase(
  run: Run,
  backend: WasmBackendLike,
  dy: TensorInfo,
  filter: TensorInfo,
  inputShape: [number, number, number, number],
  info: ReturnType<typeof convInfo>,
): TensorInfo {
  const { filterHeight: kh, filterWidth: kw, strideHeight: s, outHeight: oh, outWidth: ow } = info;
  const { top, left } = info.padInfo;
  const [n, h, w, cin] = inputShape;
  const cout = info.outChannels;
  const rows = phaseTaps(kh, s, top);
  const cols = phaseTaps(kw, s, left);
  const m = Math.ceil(h / s);
  const mw = Math.ceil(w / s);
  // Filter [taps_h, taps_w, Cout, (ph, pw, Cin)]: the channel order DepthToSpace expects.
  const src = backend.typedArrayFromHeap(filter);
  const depth = s * s * cin;
  const f = new Float32Array(rows.taps * cols.taps * cout * depth);
  for (let jh = 0; jh < rows.taps; jh++)
    for (let ph = 0; ph < s; ph++) {
      const fy = ph + top - s * (jh + rows.jMin);
      if (fy < 0 || fy >= kh) continue;
      for (let jw = 0; jw < cols.taps; jw++)
        for (let pw = 0; pw < s; pw++) {
          const fx = pw + left - s * (jw + cols.jMin);
          if (fx < 0 || fx >= kw) continue;
          for (let ci = 0; ci < cin; ci++) {
            const from = ((fy * kw + fx) * cin + ci) * cout;
            const to = (jh * cols.taps + jw) * cout * depth + (ph * s + pw) * cin + ci;
            for (let co = 0; co < cout; co++) f[to + co * depth] = src[from + co]!;
          }
        }
    }
  const phaseFilter = run.constant([rows.taps, cols.taps, cout, depth], f);
  // dy rows −jMin … m − 1 + jMax: zero rows outside dy as padding, unused trailing rows cut.
  const padTop = -rows.jMin;
  const padLeft = -cols.jMin;
  const phases = convStride1(run, dy, phaseFilter, [
    padTop,
    m + rows.taps - 1 - oh - padTop,
    padLeft,
    mw + cols.taps - 1 - ow - padLeft,
  ]);
  // The pixel shuffle as reshape + 4-D transpose [N·M, M', ph, (pw, Cin)] → [N·M, ph, M', (pw, Cin)]
  // (moves rows of s·Cin floats; the backend's DepthToSpace measured 3× slower).
  const p4 = run('Reshape', { x: phases }, { shape: [n * m, mw, s, s * cin] });
  const t4 = run('Transpose', { x: p4 }, { perm: [0, 2, 1, 3] });
  const dx = run('Reshape', { x: t4 }, { shape: [n, m * s, mw * s, cin] });
  if (m * s === h && mw * s === w) return dx;
  return run('Slice', { x: dx }, { begin: [0, 0, 0, 0], size: [n, h, w, cin] });
}

/**
 * dx = correlation of the zero-upsampled, padded dy with the spatially flipped,
 * in/out-swapped filter: one stride-1 forward Conv2D.
 */
const conv2DBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const a = attrs as unknown as Conv2DBackpropInputAttrs;
  const inputShape = a.inputShape as [number, number, number, number];
  const info = convInfo(inputShape, filter.shape, a);
  const {
    filterHeight: kh,
    filterWidth: kw,
    strideHeight: sh,
    strideWidth: sw,
    outHeight: oh,
    outWidth: ow,
  } = info;
  const [n, h, w, cin] = inputShape;
  const cout = info.outChannels;
  const b = backend as unknown as WasmBackendLike;
  return withScratch(b, (run) => {
    const { top, left } = info.padInfo;
    if (sh > 1 && sh === sw && top < kh && left < kw && info.dilationHeight === 1 && info.dilationWidth === 1)
      return inputGradByPhase(run, b, dy, filter, inputShape, info);
    // Insert s−1 zeros after every row/column of dy (reshape + pad on a unit axis).
    let up = dy;
    let uh = oh;
    let uw = ow;
    if (sh > 1) {
      uh = oh * sh;
      up = insertZeros(run, up, n * oh, ow * cout, sh, [n, uh, uw, cout]);
    }
    if (sw > 1) {
      up = insertZeros(run, up, n * uh * ow, cout, sw, [n, uh, ow * sw, cout]);
      uw = ow * sw;
    }
    const padTop = kh - 1 - info.padInfo.top;
    const padLeft = kw - 1 - info.padInfo.left;
    if (padTop < 0 || padLeft < 0)
      throw new Error('wasm Conv2DBackpropInput: padding larger than the filter is not supported');
    // Rows/columns needed: h + kh − 1 in total; trailing upsampling zeros beyond that are cut.
    const flipped = run('Reverse', { x: filter }, { dims: [0, 1] });
    const swapped = run('Transpose', { x: flipped }, { perm: [0, 1, 3, 2] });
    const dx = convStride1(run, up, swapped, [
      padTop,
      h + kh - 1 - padTop - uh,
      padLeft,
      w + kw - 1 - padLeft - uw,
    ]);
    if (dx.shape[3] !== cin) throw new Error('wasm Conv2DBackpropInput: channel mismatch');
    return dx;
  });
};

/**
 * Mean (or sum) of an NHWC tensor over N, H and W (batch-norm moments and the gradients of
 * per-channel scale/shift) as two XNNPACK average poolings: one H×W window per image, then
 * one window over the N image means. 3–4× faster than the matrix product below (measured
 * 0.9 vs 3.1 ms on [64, 64, 64, 16]), which runs the backend's scalar loop because its
 * left operand is transposed. Every window has the same size, so the mean of means is the mean.
 */
function meanOverNHW(run: Run, x: TensorInfo, mean: boolean): TensorInfo {
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const pool = (t: TensorInfo, window: [number, number]) =>
    run('AvgPool', { x: t }, {
      filterSize: window,
      strides: window,
      pad: 'valid',
    } as unknown as NamedAttrMap);
  const perImage = h * w === 1 ? x : pool(x, [h, w]);
  const images = run('Reshape', { x: perImage }, { shape: [1, n, 1, c] });
  const m = n === 1 ? images : pool(images, [n, 1]);
  if (mean) return m;
  return run('Multiply', { a: m, b: run.constant([], Float32Array.of(n * h * w)) });
}

/**
 * Sum or mean over LEADING axes (N, H, W of NHWC: batch-norm moments and the gradients of
 * per-channel scale/shift) without the backend's transpose: average pooling for all three
 * axes of a 4-D tensor, else ONE matrix product, x[R, C]ᵀ · (1/R or 1)·1[R, 1].
 * The backend's own Sum/Mean transpose the whole input first so that the reduced axes
 * become innermost (measured 2× slower than the product; a JS loop over the heap was
 * about as slow as the transpose). Returns undefined for the cases it does not cover.
 */
function reduceLeading(
  backend: WasmBackendLike,
  x: TensorInfo,
  axis: number | number[],
  keepDims: boolean,
  mean: boolean,
): TensorInfo | undefined {
  if (x.dtype !== 'float32') return undefined;
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  if (axes.length === 0 || axes.some((a, i) => a !== i)) return undefined;
  const k = axes.length;
  const rows = x.shape.slice(0, k).reduce((a, b) => a * b, 1);
  const cols = x.shape.slice(k).reduce((a, b) => a * b, 1);
  if (rows === 0 || cols === 0) return undefined;
  const outShape = keepDims ? x.shape.map((d, i) => (i < k ? 1 : d)) : x.shape.slice(k);
  return withScratch(backend, (run) => {
    if (x.shape.length === 4 && k === 3)
      return run('Reshape', { x: meanOverNHW(run, x, mean) }, { shape: outShape });
    const weights = run('Fill', {}, { shape: [1, rows, 1], value: mean ? 1 / rows : 1, dtype: 'float32' });
    const x3 = run('Reshape', { x }, { shape: [1, rows, cols] });
    // x as the transposed LEFT operand: with x on the right, XNNPACK would pack all of it
    // as weights on every call (4× slower than this, measured).
    const prod = run('BatchMatMul', { a: x3, b: weights }, { transposeA: true, transposeB: false });
    return run('Reshape', { x: prod }, { shape: outShape });
  });
}

/**
 * Sum or mean of an NHWC tensor over H and W only (group norm's moments and backward sums, the
 * encoder's global average pooling) as ONE XNNPACK average pooling with an H×W window: the
 * backend's own kernel transposes the whole input first. Other cases: undefined.
 */
function reduceSpatial(
  backend: WasmBackendLike,
  x: TensorInfo,
  axis: number | number[],
  keepDims: boolean,
  mean: boolean,
): TensorInfo | undefined {
  if (x.dtype !== 'float32' || x.shape.length !== 4) return undefined;
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  if (axes.length !== 2 || axes[0] !== 1 || axes[1] !== 2) return undefined;
  const [n, h, w, c] = x.shape as [number, number, number, number];
  if (n * h * w * c === 0) return undefined;
  return withScratch(backend, (run) => {
    const pooled =
      h * w === 1
        ? x
        : run('AvgPool', { x }, {
            filterSize: [h, w],
            strides: [h, w],
            pad: 'valid',
          } as unknown as NamedAttrMap);
    const scaled =
      mean || h * w === 1
        ? pooled
        : run('Multiply', { a: pooled, b: run.constant([], Float32Array.of(h * w)) });
    return run('Reshape', { x: scaled }, { shape: keepDims ? [n, 1, 1, c] : [n, c] });
  });
}

function reductionKernel(name: 'Sum' | 'Mean', original: tf.KernelConfig | undefined): tf.KernelConfig {
  return {
    kernelName: name,
    backendName: BACKEND,
    ...(original?.setupFunc ? { setupFunc: original.setupFunc } : {}),
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
      const b = args.backend as unknown as WasmBackendLike;
      const fast =
        reduceLeading(b, x, axis, keepDims, name === 'Mean') ??
        reduceSpatial(b, x, axis, keepDims, name === 'Mean');
      if (fast) return fast;
      if (!original) throw new Error(`wasm backend has no kernel ${name}`);
      return original.kernelFunc(args);
    },
  };
}

/** Below this many elements the backend's broadcasting kernel is as fast as a convolution call. */
const CHANNEL_OP_MIN_SIZE = 4096;

/** Whether `v` is one value per channel of `x` (shape [C] or [1, …, 1, C], C = x's last axis). */
function isChannelVector(x: TensorInfo, v: TensorInfo): boolean {
  const c = x.shape[x.shape.length - 1];
  const k = v.shape.length;
  return (
    x.shape.length >= 2 &&
    k >= 1 &&
    k <= x.shape.length &&
    v.shape[k - 1] === c &&
    v.shape.slice(0, -1).every((d) => d === 1)
  );
}

const SIMD_OP = { Multiply: 'mul', Add: 'add', Sub: 'sub' } as const;

/** Whether `v` is one value per (sample, channel) of `x`: shape [N, 1, …, 1, C] for x [N, …, C], N > 1. */
function isSampleChannelVector(x: TensorInfo, v: TensorInfo): boolean {
  const r = x.shape.length;
  return (
    r >= 3 &&
    v.shape.length === r &&
    x.shape[0]! > 1 &&
    v.shape[0] === x.shape[0] &&
    v.shape[r - 1] === x.shape[r - 1] &&
    v.shape.slice(1, -1).every((d) => d === 1)
  );
}

/**
 * x·v, x + v or x − v with v one value per (sample, channel), group norm's scale and shift, in
 * fedssl's SIMD module: the backend's broadcasting kernels walk this element by element.
 * Undefined where the module is not loaded or the shapes are not that case.
 */
function sampleChannelOp(
  backend: WasmBackendLike,
  name: 'Multiply' | 'Add' | 'Sub',
  a: TensorInfo,
  b: TensorInfo,
): TensorInfo | undefined {
  const swapped = name !== 'Sub' && isSampleChannelVector(b, a);
  if (!swapped && !isSampleChannelVector(a, b)) return undefined;
  const [x, v] = swapped ? [b, a] : [a, b];
  const size = tf.util.sizeFromShape(x.shape);
  const simd = simdKernels(backend, 'channel');
  if (!simd || size < CHANNEL_OP_MIN_SIZE) return undefined;
  const n = x.shape[0]!;
  const c = x.shape[x.shape.length - 1]!;
  const y = backend.makeOutput(x.shape, 'float32');
  simd.channelOp(
    { x: heapOffset(backend, x), v: heapOffset(backend, v), y: heapOffset(backend, y) },
    { outer: n, inner: size / n / c, c, perOuter: true },
    SIMD_OP[name],
  );
  return y;
}

/**
 * x·v, x + v or x − v with v one value per channel (batch norm's scale/shift, a bias) or per
 * (sample, channel): fedssl's SIMD channel op where the module is loaded, else a 1×1 depthwise
 * convolution (XNNPACK; v the filter, or ones as the filter and v the bias). The backend's
 * broadcasting binary kernels take several times longer. Other cases: undefined.
 */
function channelOp(
  backend: WasmBackendLike,
  name: 'Multiply' | 'Add' | 'Sub',
  a: TensorInfo,
  b: TensorInfo,
): TensorInfo | undefined {
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const perSample = sampleChannelOp(backend, name, a, b);
  if (perSample) return perSample;
  let x = a;
  let v = b;
  if (!isChannelVector(a, b)) {
    if (name === 'Sub' || !isChannelVector(b, a)) return undefined;
    x = b;
    v = a;
  }
  const size = tf.util.sizeFromShape(x.shape);
  if (size < CHANNEL_OP_MIN_SIZE) return undefined;
  const c = x.shape[x.shape.length - 1]!;
  const simd = simdKernels(backend, 'channel');
  if (simd) {
    const y = backend.makeOutput(x.shape, 'float32');
    simd.channelOp(
      { x: heapOffset(backend, x), v: heapOffset(backend, v), y: heapOffset(backend, y) },
      { outer: 1, inner: size / c, c, perOuter: false },
      SIMD_OP[name],
    );
    return y;
  }
  return withScratch(backend, (run) => {
    const x4 = run('Reshape', { x }, { shape: [1, 1, size / c, c] });
    const conv = {
      strides: [1, 1],
      pad: 'valid',
      dilations: [1, 1],
      dataFormat: 'NHWC',
    } as unknown as NamedAttrMap;
    let y: TensorInfo;
    if (name === 'Multiply') {
      const filter = run('Reshape', { x: v }, { shape: [1, 1, c, 1] });
      y = run('DepthwiseConv2dNative', { x: x4, filter }, conv);
    } else {
      const filter = run('Fill', {}, { shape: [1, 1, c, 1], value: 1, dtype: 'float32' });
      // The kernel wants the bias's own data rank-1 (a reshape is not enough): C values copied.
      const values = backend.typedArrayFromHeap(v).slice();
      if (name === 'Sub') for (let i = 0; i < c; i++) values[i] = -values[i]!;
      const bias = run.constant([c], values);
      y = run('FusedDepthwiseConv2D', { x: x4, filter, bias }, { ...conv, activation: 'linear' });
    }
    return run('Reshape', { x: y }, { shape: x.shape });
  });
}

function channelOpKernel(name: 'Multiply' | 'Add' | 'Sub', original: tf.KernelConfig): tf.KernelConfig {
  return {
    ...original,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      return channelOp(args.backend as unknown as WasmBackendLike, name, a, b) ?? original.kernelFunc(args);
    },
  };
}

/** Below this many multiply-adds a transposed product stays in the backend's loop. */
const MATMUL_REWRITE_MIN_MACS = 1 << 18;

/**
 * A matrix product with a transposed operand (every gradient of a Linear layer: xᵀ·dy and
 * dy·Wᵀ) as an explicit transpose and the untransposed product: tfjs-backend-wasm sends
 * ANY transposed operand to a scalar C++ loop (`slow_batch_matmul`) and only the plain
 * case to XNNPACK. Only unbatched products (XNNPACK's path needs batch 1) with two real
 * matrices (not a vector: those are memory-bound either way); else undefined.
 */
function matMulUntransposed(
  backend: WasmBackendLike,
  a: TensorInfo,
  b: TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
): TensorInfo | undefined {
  if (!transposeA && !transposeB) return undefined;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const batch = (t: TensorInfo) => t.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  if (a.shape.length < 2 || b.shape.length < 2 || batch(a) !== 1 || batch(b) !== 1) return undefined;
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const m = transposeA ? ac : ar;
  const k = transposeA ? ar : ac;
  const n = transposeB ? br : bc;
  if (m === 1 || n === 1 || m * n * k < MATMUL_REWRITE_MIN_MACS) return undefined;
  const outShape = [...a.shape.slice(0, -2), m, n];
  return withScratch(backend, (run) => {
    const t2 = (x: TensorInfo, r: number, c: number) =>
      run('Transpose', { x: run('Reshape', { x }, { shape: [r, c] }) }, { perm: [1, 0] });
    const plain = (x: TensorInfo, y: TensorInfo, rows: number, inner: number, cols: number) =>
      run(
        'BatchMatMul',
        {
          a: run('Reshape', { x }, { shape: [1, rows, inner] }),
          b: run('Reshape', { x: y }, { shape: [1, inner, cols] }),
        },
        { transposeA: false, transposeB: false },
      );
    let prod: TensorInfo;
    if (transposeB && !transposeA && m * k + m * n < n * k) {
      // A·Bᵀ = (B·Aᵀ)ᵀ: transposes A and the product instead of a large B (dy·Wᵀ of a wide layer).
      prod = t2(plain(b, t2(a, m, k), n, k, m), n, m);
    } else {
      prod = plain(transposeA ? t2(a, ar, ac) : a, transposeB ? t2(b, br, bc) : b, m, k, n);
    }
    return run('Reshape', { x: prod }, { shape: outShape });
  });
}

function matMulKernel(original: tf.KernelConfig): tf.KernelConfig {
  return {
    ...original,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      const { transposeA, transposeB } = args.attrs as unknown as {
        transposeA: boolean;
        transposeB: boolean;
      };
      return (
        matMulUntransposed(args.backend as unknown as WasmBackendLike, a, b, transposeA, transposeB) ??
        original.kernelFunc(args)
      );
    },
  };
}

/**
 * Identity (what `tf.clone`, `tf.keep` of a custom gradient's saved tensors and variable
 * reads run) as a second reference to the same bytes, as the cpu backend and the wasm
 * backend's own Reshape do: the backend's Identity copies the whole tensor, and the engine
 * clones every tensor a gradient saves (activations of every layer, on every step).
 * Safe because no wasm kernel writes into its inputs; disposal counts references.
 */
const identityShared: KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as { x: TensorInfo };
  if (x.dtype === 'string') throw new Error('wasm Identity: string tensors are not supported here');
  (backend as unknown as WasmBackendLike).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape.slice(), dtype: x.dtype };
};

let registered = false;

/**
 * Register the project's wasm training kernels (Conv2D and Conv2DBackpropFilter through
 * fedssl's SIMD module, a faster
 * Conv2DBackpropInput, Sum/Mean over leading axes or over H, W without a transpose, an Identity
 * that shares its input's bytes, transposed matrix products through XNNPACK). Idempotent; safe to call before or after the wasm backend
 * initialises. Replaces the backend's own Conv2DBackpropInput.
 */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  for (const [kernelName, kernelFunc] of [
    ['Conv2DBackpropFilter', conv2DBackpropFilter],
    ['Conv2DBackpropInput', conv2DBackpropInput],
    ['Identity', identityShared],
  ] as const) {
    if (tf.getKernel(kernelName, BACKEND)) tf.unregisterKernel(kernelName, BACKEND);
    tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc });
  }
  for (const name of ['Multiply', 'Add', 'Sub'] as const) {
    const original = tf.getKernel(name, BACKEND);
    if (!original) continue;
    tf.unregisterKernel(name, BACKEND);
    tf.registerKernel(channelOpKernel(name, original));
  }
  const conv2D = tf.getKernel('Conv2D', BACKEND);
  if (conv2D) {
    tf.unregisterKernel('Conv2D', BACKEND);
    tf.registerKernel(conv2DKernel(conv2D));
  }
  const matMul = tf.getKernel('BatchMatMul', BACKEND);
  if (matMul) {
    tf.unregisterKernel('BatchMatMul', BACKEND);
    tf.registerKernel(matMulKernel(matMul));
  }
  for (const name of ['Sum', 'Mean'] as const) {
    const original = tf.getKernel(name, BACKEND);
    if (original) tf.unregisterKernel(name, BACKEND);
    tf.registerKernel(reductionKernel(name, original));
  }
  registered = true;
}
