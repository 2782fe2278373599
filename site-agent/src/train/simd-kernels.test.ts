import { describe, expect, it } from 'vitest';
import { random, relErr } from './numeric-test-util';
import { type ChannelOpShape, type ConvShape, SimdKernels, type WasmMemory } from './simd-kernels';

/** dW by the definition, in float64: the reference for the SIMD kernel. */
function naiveFilterGrad(x: Float32Array, dy: Float32Array, s: ConvShape): Float32Array {
  const dw = new Float64Array(s.kh * s.kw * s.cin * s.cout);
  for (let n = 0; n < s.n; n++)
    for (let oy = 0; oy < s.outHeight; oy++)
      for (let ox = 0; ox < s.outWidth; ox++)
        for (let ky = 0; ky < s.kh; ky++)
          for (let kx = 0; kx < s.kw; kx++) {
            const iy = oy * s.strideHeight + ky - s.top;
            const ix = ox * s.strideWidth + kx - s.left;
            if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
            for (let ci = 0; ci < s.cin; ci++) {
              const xv = x[((n * s.h + iy) * s.w + ix) * s.cin + ci]!;
              for (let co = 0; co < s.cout; co++)
                dw[((ky * s.kw + kx) * s.cin + ci) * s.cout + co]! +=
                  xv * dy[((n * s.outHeight + oy) * s.outWidth + ox) * s.cout + co]!;
            }
          }
  return Float32Array.from(dw);
}

/** The forward convolution by the definition, in float64 (zero padding at top/left and wherever a tap leaves x). */
function naiveConv(x: Float32Array, w: Float32Array, s: ConvShape): Float32Array {
  const y = new Float64Array(s.n * s.outHeight * s.outWidth * s.cout);
  for (let n = 0; n < s.n; n++)
    for (let oy = 0; oy < s.outHeight; oy++)
      for (let ox = 0; ox < s.outWidth; ox++)
        for (let ky = 0; ky < s.kh; ky++)
          for (let kx = 0; kx < s.kw; kx++) {
            const iy = oy * s.strideHeight + ky - s.top;
            const ix = ox * s.strideWidth + kx - s.left;
            if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
            for (let ci = 0; ci < s.cin; ci++) {
              const xv = x[((n * s.h + iy) * s.w + ix) * s.cin + ci]!;
              for (let co = 0; co < s.cout; co++)
                y[((n * s.outHeight + oy) * s.outWidth + ox) * s.cout + co]! +=
                  xv * w[((ky * s.kw + kx) * s.cin + ci) * s.cout + co]!;
            }
          }
  return Float32Array.from(y);
}

function shape(p: Partial<ConvShape> & Pick<ConvShape, 'h' | 'w' | 'cin' | 'cout'>): ConvShape {
  const s = { n: 2, kh: 3, kw: 3, strideHeight: 1, strideWidth: 1, top: 1, left: 1, ...p };
  // The output size of a convolution padded by top/left at the start and as much at the end.
  const outHeight = p.outHeight ?? Math.floor((s.h + 2 * s.top - s.kh) / s.strideHeight) + 1;
  const outWidth = p.outWidth ?? Math.floor((s.w + 2 * s.left - s.kw) / s.strideWidth) + 1;
  return { ...s, outHeight, outWidth };
}

const Wasm = (
  globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => WasmMemory } }
).WebAssembly;
/** Stands in for tfjs-backend-wasm's heap: a memory of its own, 1 MiB to start. */
const memory = new Wasm.Memory({ initial: 16 });
const SENTINEL = -12345.5;

/**
 * Writes `inputs` into the memory one after another (from a 16-byte-aligned start past 0, as a
 * heap allocator would), fills an output region of `outLength` floats and a guard region after
 * it with a sentinel, runs `kernel` on the offsets, and returns the output plus whether every
 * float outside it (and outside the input numbered `scratch`, a kernel's workspace) was left alone.
 */
function inMemory(
  inputs: Float32Array[],
  outLength: number,
  kernel: (offsets: number[]) => void,
  scratch?: number,
): { out: Float32Array; untouched: boolean } {
  const offsets: number[] = [];
  let end = 4096;
  for (const length of [...inputs.map((i) => i.length), outLength, 1024]) {
    offsets.push(end);
    end += Math.ceil((length * 4) / 16) * 16;
  }
  if (end > memory.buffer.byteLength) memory.grow(Math.ceil((end - memory.buffer.byteLength) / 65536));
  const heap = new Float32Array(memory.buffer);
  heap.fill(SENTINEL);
  inputs.forEach((input, i) => heap.set(input, offsets[i]! / 4));
  const before = heap.slice();
  kernel(offsets);
  const outAt = offsets[inputs.length]! / 4;
  const after = new Float32Array(memory.buffer);
  let untouched = true;
  const writable = (i: number) =>
    (i >= outAt && i < outAt + outLength) ||
    (scratch !== undefined &&
      i >= offsets[scratch]! / 4 &&
      i < offsets[scratch]! / 4 + inputs[scratch]!.length);
  for (let i = 0; i < after.length && untouched; i++)
    if (!writable(i) && !Object.is(after[i], before[i])) untouched = false;
  return { out: after.slice(outAt, outAt + outLength), untouched };
}

describe('SIMD convolution kernels (committed wasm module)', () => {
  // A missing or invalid module would silently fall back to the slower XNNPACK path; fail instead.
  const simd = SimdKernels.load(memory);
  it('loads from site-agent/native', () => {
    expect(simd).toBeDefined();
  });

  const cases: [string, ConvShape][] = [
    ['3×3 stride 1, 4×8 tiles', shape({ h: 9, w: 7, cin: 8, cout: 16 })],
    [
      '3×3 stride 2 with a 4×4 remainder tile',
      shape({ h: 10, w: 9, cin: 4, cout: 12, strideHeight: 2, strideWidth: 2 }),
    ],
    [
      '1×1 stride 2, no padding',
      shape({ h: 8, w: 8, cin: 12, cout: 4, kh: 1, kw: 1, top: 0, left: 0, strideHeight: 2, strideWidth: 2 }),
    ],
    [
      '5×5 stride 3, valid',
      shape({
        h: 11,
        w: 13,
        cin: 4,
        cout: 8,
        kh: 5,
        kw: 5,
        top: 0,
        left: 0,
        strideHeight: 3,
        strideWidth: 3,
      }),
    ],
    [
      'unequal strides, padding wider than the input edge',
      shape({ h: 6, w: 5, cin: 4, cout: 8, kh: 5, kw: 5, top: 2, left: 3, strideHeight: 1, strideWidth: 2 }),
    ],
    ['more output rows than one reduction block', shape({ n: 3, h: 17, w: 3, cin: 4, cout: 4 })],
  ];
  for (const [name, s] of cases)
    it(`equals the definition: ${name}`, () => {
      const x = random(s.n * s.h * s.w * s.cin, 11);
      const dy = random(s.n * s.outHeight * s.outWidth * s.cout, 12);
      const { out, untouched } = inMemory([x, dy], s.kh * s.kw * s.cin * s.cout, ([xAt, dyAt, dwAt]) =>
        simd!.filterGrad({ x: xAt!, dy: dyAt!, dw: dwAt! }, s),
      );
      expect(relErr(out, naiveFilterGrad(x, dy, s))).toBeLessThan(1e-5);
      expect(untouched).toBe(true);
    });

  const convCases: [string, ConvShape][] = [
    ['3×3 stride 1, 4×8 tiles', shape({ h: 9, w: 8, cin: 8, cout: 16 })],
    [
      'the stem: one input channel, 7×7 stride 2',
      shape({
        h: 16,
        w: 16,
        cin: 1,
        cout: 8,
        kh: 7,
        kw: 7,
        top: 3,
        left: 3,
        strideHeight: 2,
        strideWidth: 2,
      }),
    ],
    [
      "stride 2 'same' on an even size: no leading padding, one trailing",
      shape({
        h: 8,
        w: 8,
        cin: 4,
        cout: 8,
        top: 0,
        left: 0,
        outHeight: 4,
        outWidth: 4,
        strideHeight: 2,
        strideWidth: 2,
      }),
    ],
    [
      'trailing rows the taps never read (negative trailing padding)',
      shape({ h: 9, w: 10, cin: 3, cout: 4, kh: 2, kw: 2, top: 0, left: 0, strideHeight: 2, strideWidth: 2 }),
    ],
    [
      'rows of 7 pixels (1-pixel remainder tiles) and 12 channels (a 4-wide remainder)',
      shape({ h: 5, w: 7, cin: 5, cout: 12 }),
    ],
    ['1×1 stride 1, unpadded', shape({ h: 6, w: 6, cin: 16, cout: 32, kh: 1, kw: 1, top: 0, left: 0 })],
    [
      'padding wider than the filter: whole rows and columns of zeros',
      shape({ h: 4, w: 4, cin: 4, cout: 4, kh: 1, kw: 1, top: 1, left: 1 }),
    ],
    [
      'unequal strides and padding',
      shape({ h: 7, w: 9, cin: 4, cout: 8, kh: 3, kw: 5, top: 1, left: 2, strideHeight: 1, strideWidth: 2 }),
    ],
  ];
  for (const [name, s] of convCases)
    it(`conv2d equals the definition: ${name}`, () => {
      const x = random(s.n * s.h * s.w * s.cin, 21);
      const w = random(s.kh * s.kw * s.cin * s.cout, 22);
      // The packing scratch may be written (the kernel fills it, then reads it); nothing else.
      const { out, untouched } = inMemory(
        [x, w, new Float32Array(w.length)],
        s.n * s.outHeight * s.outWidth * s.cout,
        ([xAt, wAt, packedAt, yAt]) => simd!.conv2d({ x: xAt!, filter: wAt!, packed: packedAt!, y: yAt! }, s),
        2,
      );
      expect(relErr(out, naiveConv(x, w, s))).toBeLessThan(1e-5);
      expect(untouched).toBe(true);
    });

  const channelCases: [string, ChannelOpShape][] = [
    ['one value per channel, lanes of 4', { outer: 1, inner: 37, c: 8, perOuter: false }],
    ['one row of values per sample (group norm)', { outer: 3, inner: 25, c: 12, perOuter: true }],
    ['5 channels: the scalar loop', { outer: 2, inner: 9, c: 5, perOuter: true }],
  ];
  for (const [name, s] of channelCases)
    for (const op of ['mul', 'add', 'sub'] as const)
      it(`channel ${op} equals the definition: ${name}`, () => {
        const x = random(s.outer * s.inner * s.c, 31);
        const v = random((s.perOuter ? s.outer : 1) * s.c, 32);
        const { out, untouched } = inMemory([x, v], x.length, ([xAt, vAt, yAt]) =>
          simd!.channelOp({ x: xAt!, v: vAt!, y: yAt! }, s, op),
        );
        const want = x.map((xv, i) => {
          const o = Math.floor(i / (s.inner * s.c));
          const vv = v[(s.perOuter ? o * s.c : 0) + (i % s.c)]!;
          return op === 'mul' ? xv * vv : op === 'add' ? xv + vv : xv - vv;
        });
        expect(out).toEqual(want);
        expect(untouched).toBe(true);
      });

  it('works on the memory after it grew (the heap grows under it between calls)', () => {
    const s = shape({ h: 5, w: 5, cin: 4, cout: 8 });
    const x = random(s.n * 25 * 4, 1);
    const dy = random(s.n * 25 * 8, 2);
    const run = () =>
      inMemory([x, dy], 9 * 4 * 8, ([xAt, dyAt, dwAt]) =>
        simd!.filterGrad({ x: xAt!, dy: dyAt!, dw: dwAt! }, s),
      ).out;
    const before = run();
    memory.grow(4);
    expect(run()).toEqual(before);
  });

  it('names what is wrong with unsupported shapes or offsets', () => {
    expect(SimdKernels.supportsFilterGrad({ cin: 1, cout: 16 })).toBe(false);
    expect(SimdKernels.supportsFilterGrad({ cin: 16, cout: 6 })).toBe(false);
    expect(SimdKernels.supportsFilterGrad({ cin: 4, cout: 8 })).toBe(true);
    expect(SimdKernels.supportsConv({ cout: 6 })).toBe(false);
    expect(SimdKernels.supportsConv({ cout: 4 })).toBe(true);
    const s = shape({ h: 4, w: 4, cin: 3, cout: 8 });
    expect(() => simd!.filterGrad({ x: 0, dy: 0, dw: 0 }, s)).toThrow(/multiples of 4, got cin 3/);
    expect(() => simd!.conv2d({ x: 0, filter: 0, packed: 0, y: 0 }, { ...s, cout: 6 })).toThrow(
      /multiples of 4, got 6/,
    );
    expect(() => simd!.conv2d({ x: 4096, filter: 4098, packed: 0, y: 0 }, s)).toThrow(
      /offset 4098 is not a float32 address/,
    );
    expect(() => simd!.conv2d({ x: 4096, filter: 4096, packed: 4104, y: 0 }, s)).toThrow(
      /packing scratch at 4104 is not 16-byte aligned/,
    );
  });

  it('is absent, not broken, where the module file is missing', () => {
    expect(SimdKernels.load(memory, '/nonexistent/simd-kernels.wasm')).toBeUndefined();
  });
});
