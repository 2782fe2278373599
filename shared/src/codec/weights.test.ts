import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFedsslError, type ErrorCode } from '../errors';
import { sha256Hex } from '../crypto/hash';
import type { NamedTensors } from './types';
import { decodeWeights, encodeWeights, readWeightManifest, tensorSpecs, weightsSha256 } from './weights';

function thrown(fn: () => unknown): { code: ErrorCode | 'none' | 'foreign'; message: string } {
  try {
    fn();
    return { code: 'none', message: '' };
  } catch (e) {
    return isFedsslError(e) ? { code: e.code, message: e.message } : { code: 'foreign', message: String(e) };
  }
}

function bits(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const sample: NamedTensors = [
  {
    name: 'encoder/conv1/kernel',
    shape: [3, 3, 1, 2],
    data: Float32Array.from({ length: 18 }, (_, i) => i / 7 - 1),
  },
  { name: 'encoder/conv1/bias', shape: [3], data: new Float32Array([0.5, -0, 1e-40]) },
  { name: 'scalar', shape: [], data: new Float32Array([42]) },
  { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
];

/** Assemble a weights file by hand from a manifest object and a data section. */
function build(
  manifest: unknown,
  data: Uint8Array,
  opts: { magic?: string; manifestText?: string; manifestBytes?: Uint8Array } = {},
): Uint8Array {
  const text = opts.manifestBytes ?? new TextEncoder().encode(opts.manifestText ?? JSON.stringify(manifest));
  const dataStart = Math.ceil((8 + text.length) / 8) * 8;
  const out = new Uint8Array(dataStart + data.length);
  out.set(new TextEncoder().encode(opts.magic ?? 'FSW1'), 0);
  new DataView(out.buffer).setUint32(4, text.length, true);
  out.set(text, 8);
  out.set(data, dataStart);
  return out;
}

/** A valid two-tensor file's parts, to be bent into malformed variants. */
function parts(): {
  manifest: { format: string; tensors: Record<string, unknown>[]; dataSha256: string };
  data: Uint8Array;
} {
  const data = new Uint8Array(24); // a: 3 floats (12 bytes) + 4 pad, b: 2 floats (8 bytes)
  new DataView(data.buffer).setFloat32(0, 1.5, true);
  new DataView(data.buffer).setFloat32(16, -2, true);
  return {
    manifest: {
      format: 'fedssl-weights/1',
      tensors: [
        { name: 'a', shape: [3], dtype: 'float32', offset: 0, byteLength: 12 },
        { name: 'b', shape: [2, 1], dtype: 'float32', offset: 16, byteLength: 8 },
      ],
      dataSha256: sha256Hex(data),
    },
    data,
  };
}

describe('encodeWeights / decodeWeights', () => {
  it('round-trips, preserving order, shapes and exact bits (-0, subnormals)', () => {
    const bytes = encodeWeights(sample);
    const { manifest, tensors } = decodeWeights(bytes);
    expect(tensors.map((t) => t.name)).toEqual(sample.map((t) => t.name));
    tensors.forEach((t, i) => {
      const s = sample[i];
      expect(t.shape).toEqual(s?.shape);
      expect(bits(t.data)).toEqual(bits(s?.data ?? new Float32Array()));
    });
    expect(Object.is(tensors[1]?.data[1], -0)).toBe(true);
    expect(manifest.format).toBe('fedssl-weights/1');
    expect(manifest.tensors.every((t) => t.offset % 8 === 0 && t.dtype === 'float32')).toBe(true);
  });

  it('writes the documented layout', () => {
    const bytes = encodeWeights(sample);
    expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe('FSW1');
    const len = new DataView(bytes.buffer).getUint32(4, true);
    const manifest = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len))) as {
      dataSha256: string;
    };
    const dataStart = Math.ceil((8 + len) / 8) * 8;
    expect(manifest.dataSha256).toBe(sha256Hex(bytes.subarray(dataStart)));
    // First tensor's first float sits little-endian at the start of the data section.
    expect(new DataView(bytes.buffer).getFloat32(dataStart, true)).toBe(sample[0]?.data[0]);
    expect(readWeightManifest(bytes).dataStart).toBe(dataStart);
  });

  it('is deterministic (same tensors → same bytes → same hash)', () => {
    const a = encodeWeights(sample);
    const b = encodeWeights(sample.map((t) => ({ ...t, data: Float32Array.from(t.data) })));
    expect(a).toEqual(b);
    expect(weightsSha256(a)).toBe(sha256Hex(b));
  });

  it('handles unaligned input views and unaligned encoded bytes', () => {
    const buf = new ArrayBuffer(4 + 12);
    const view = new Float32Array(buf, 4, 3);
    view.set([1, 2, 3]);
    const enc = encodeWeights([{ name: 'v', shape: [3], data: view }]);
    const shifted = new Uint8Array(enc.length + 1);
    shifted.set(enc, 1);
    const { tensors } = decodeWeights(shifted.subarray(1));
    expect(Array.from(tensors[0]?.data ?? [])).toEqual([1, 2, 3]);
    expect(tensors[0]?.data.byteOffset).toBe(0);
  });

  it('returns copies that do not alias the input bytes', () => {
    const enc = encodeWeights(sample);
    const { tensors } = decodeWeights(enc);
    enc.fill(0);
    expect(tensors[2]?.data[0]).toBe(42);
  });

  it('encodes an empty tensor list', () => {
    const { tensors, manifest } = decodeWeights(encodeWeights([]));
    expect(tensors).toEqual([]);
    expect(manifest.dataSha256).toBe(sha256Hex(new Uint8Array(0)));
  });

  it('round-trips random shapes and float values (fast-check)', () => {
    const tensor = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }).chain((shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return fc.record({
        shape: fc.constant(shape),
        values: fc.array(fc.float({ noDefaultInfinity: false, noNaN: false }), {
          minLength: n,
          maxLength: n,
        }),
      });
    });
    const tensorsArb = fc.uniqueArray(
      fc.record({ name: fc.string({ minLength: 1, maxLength: 40 }), t: tensor }),
      {
        maxLength: 6,
        selector: (x) => x.name,
      },
    );
    fc.assert(
      fc.property(tensorsArb, (list) => {
        const input: NamedTensors = list.map(({ name, t }) => ({
          name,
          shape: t.shape,
          data: Float32Array.from(t.values),
        }));
        const { tensors } = decodeWeights(encodeWeights(input), tensorSpecs(input));
        expect(tensors.length).toBe(input.length);
        tensors.forEach((t, i) => {
          expect(t.name).toBe(input[i]?.name);
          expect(t.shape).toEqual(input[i]?.shape);
          expect(bits(t.data)).toEqual(bits(input[i]?.data ?? new Float32Array()));
        });
      }),
      { numRuns: 200 },
    );
  });
});

describe('encodeWeights rejects invalid input', () => {
  it.each<[string, NamedTensors, string]>([
    [
      'shape/data mismatch',
      [{ name: 'a', shape: [2, 2], data: new Float32Array(3) }],
      'tensor "a" shape [2,2] has 4 elements but data has 3',
    ],
    [
      'duplicate name',
      [
        { name: 'a', shape: [], data: new Float32Array(1) },
        { name: 'a', shape: [], data: new Float32Array(1) },
      ],
      'duplicate tensor name "a" at #1',
    ],
    [
      'empty name',
      [{ name: '', shape: [], data: new Float32Array(1) }],
      'tensor #0 name must be 1..256 characters',
    ],
    [
      'long name',
      [{ name: 'x'.repeat(257), shape: [], data: new Float32Array(1) }],
      'tensor #0 name must be 1..256 characters',
    ],
    [
      'negative dim',
      [{ name: 'a', shape: [-1], data: new Float32Array(0) }],
      'tensor "a" shape must be at most 8 non-negative integers',
    ],
    ['fractional dim', [{ name: 'a', shape: [1.5], data: new Float32Array(1) }], 'tensor "a" shape must be'],
    [
      'not float32',
      [{ name: 'a', shape: [1], data: new Float64Array(1) as unknown as Float32Array }],
      'tensor "a" data must be a Float32Array',
    ],
  ])('%s', (_n, tensors, message) => {
    const e = thrown(() => encodeWeights(tensors));
    expect(e.code).toBe('CODEC_MALFORMED');
    expect(e.message).toContain(message);
  });

  it('accepts a 256-character name', () => {
    expect(() =>
      encodeWeights([{ name: 'x'.repeat(256), shape: [], data: new Float32Array(1) }]),
    ).not.toThrow();
  });
});

describe('decodeWeights rejects malformed bytes', () => {
  it('the hand-built reference file decodes', () => {
    const { manifest, data } = parts();
    const { tensors } = decodeWeights(build(manifest, data));
    expect(Array.from(tensors[0]?.data ?? [])).toEqual([1.5, 0, 0]);
    expect(Array.from(tensors[1]?.data ?? [])).toEqual([-2, 0]);
  });

  type Case = [string, () => Uint8Array, ErrorCode, string];
  const cases: Case[] = [
    ['too short', () => new Uint8Array(5), 'CODEC_MALFORMED', 'truncated: 5 bytes'],
    [
      'bad magic',
      () => {
        const { manifest, data } = parts();
        return build(manifest, data, { magic: 'FSW2' });
      },
      'CODEC_MALFORMED',
      'bad magic',
    ],
    [
      'manifest length past the end',
      () => {
        const b = encodeWeights([]);
        new DataView(b.buffer).setUint32(4, 1_000_000, true);
        return b;
      },
      'CODEC_MALFORMED',
      'truncated: manifest length 1000000',
    ],
    [
      'huge manifest length',
      () => {
        const b = encodeWeights([]);
        new DataView(b.buffer).setUint32(4, 0xffffffff, true);
        return b;
      },
      'CODEC_MALFORMED',
      'exceeds the limit',
    ],
    [
      'manifest not JSON',
      () => build(null, new Uint8Array(0), { manifestText: '{"format":' }),
      'CODEC_MALFORMED',
      'manifest is not UTF-8 JSON',
    ],
    [
      'manifest not UTF-8',
      () => build(null, new Uint8Array(0), { manifestBytes: Uint8Array.from([0x22, 0xff, 0xfe, 0x22]) }),
      'CODEC_MALFORMED',
      'manifest is not UTF-8 JSON',
    ],
    [
      'manifest missing a field',
      () => {
        const { manifest, data } = parts();
        return build({ ...manifest, dataSha256: undefined }, data);
      },
      'CODEC_MALFORMED',
      'manifest does not match fedssl-weights/1 at dataSha256',
    ],
    [
      'manifest with an extra field',
      () => {
        const { manifest, data } = parts();
        return build({ ...manifest, extra: 1 }, data);
      },
      'CODEC_MALFORMED',
      'manifest does not match fedssl-weights/1',
    ],
    [
      'tensor with a string offset',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[0] as Record<string, unknown>).offset = '0';
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'at tensors.0.offset',
    ],
    [
      'other format',
      () => {
        const { manifest, data } = parts();
        return build({ ...manifest, format: 'fedssl-weights/9' }, data);
      },
      'CODEC_MALFORMED',
      'unsupported format "fedssl-weights/9"',
    ],
    [
      'unknown dtype',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[1] as Record<string, unknown>).dtype = 'bfloat16';
        return build(manifest, data);
      },
      'CODEC_UNSUPPORTED_DTYPE',
      'tensor "b" has unsupported dtype "bfloat16"',
    ],
    [
      'byteLength disagrees with shape',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[0] as Record<string, unknown>).shape = [4];
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'tensor "a" byteLength 12 does not match shape [4] × 4 bytes',
    ],
    [
      'misaligned offset',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[1] as Record<string, unknown>).offset = 12;
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'tensor "b" offset 12 is not 8-aligned',
    ],
    [
      'offset out of range',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[1] as Record<string, unknown>).offset = 24;
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'tensor "b" (offset 24, 8 bytes) is out of range of the 24-byte data section',
    ],
    [
      'huge byteLength',
      () => {
        const { manifest, data } = parts();
        Object.assign(manifest.tensors[1] as object, { shape: [2 ** 40], byteLength: 2 ** 42 });
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'out of range',
    ],
    [
      'overlapping tensors',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[1] as Record<string, unknown>).offset = 8;
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'tensor "b" overlaps tensor "a"',
    ],
    [
      'gap between tensors',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[1] as Record<string, unknown>).offset = 16;
        (manifest.tensors[0] as Record<string, unknown>).shape = [1];
        (manifest.tensors[0] as Record<string, unknown>).byteLength = 4;
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'unexpected gap before tensor "b"',
    ],
    [
      'duplicate names',
      () => {
        const { manifest, data } = parts();
        (manifest.tensors[1] as Record<string, unknown>).name = 'a';
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'duplicate tensor name "a" at #1',
    ],
    [
      'truncated data',
      () => {
        const { manifest, data } = parts();
        return build(manifest, data.subarray(0, 20));
      },
      'CODEC_MALFORMED',
      'out of range',
    ],
    [
      'trailing bytes',
      () => {
        const { manifest, data } = parts();
        return build(manifest, Uint8Array.from([...data, 0, 0, 0, 0, 0, 0, 0, 0]));
      },
      'CODEC_MALFORMED',
      'data section is 32 bytes, the manifest describes 24',
    ],
    [
      'non-zero padding',
      () => {
        const { manifest, data } = parts();
        data[13] = 1;
        manifest.dataSha256 = sha256Hex(data);
        return build(manifest, data);
      },
      'CODEC_MALFORMED',
      'non-zero padding before tensor "b"',
    ],
    [
      'data does not match its hash',
      () => {
        const { manifest, data } = parts();
        data[0] = (data[0] ?? 0) ^ 1;
        return build(manifest, data);
      },
      'CODEC_HASH_MISMATCH',
      'data section SHA-256 does not match the manifest',
    ],
  ];

  it.each(cases)('%s', (_name, make, code, message) => {
    const e = thrown(() => decodeWeights(make()));
    expect(e.code).toBe(code);
    expect(e.message).toContain(message);
  });

  it('never throws anything but FedsslError on random bytes (fast-check)', () => {
    const valid = encodeWeights(sample);
    const mutated = fc
      .tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), fc.nat(valid.length))
      .map(([at, byte, cut]) => {
        const b = Uint8Array.from(valid);
        b[at] = byte;
        return b.subarray(0, cut);
      });
    const withMagic = fc
      .uint8Array({ maxLength: 300 })
      .map((r) => Uint8Array.from([0x46, 0x53, 0x57, 0x31, ...r]));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), withMagic, mutated), (bytes) => {
        const e = thrown(() => decodeWeights(bytes, tensorSpecs(sample)));
        expect(e.code).not.toBe('foreign');
      }),
      { numRuns: 1000 },
    );
  });
});

describe('decodeWeights with expected names and shapes', () => {
  const bytes = encodeWeights(sample);
  const spec = tensorSpecs(sample);

  it('accepts the exact layout', () => {
    expect(decodeWeights(bytes, spec).tensors).toHaveLength(4);
  });

  it.each<[string, (s: ReturnType<typeof tensorSpecs>) => ReturnType<typeof tensorSpecs>, string]>([
    [
      'wrong shape',
      (s) => s.map((t, i) => (i === 1 ? { ...t, shape: [4] } : t)),
      'tensor #1: expected "encoder/conv1/bias" [4], got "encoder/conv1/bias" [3]',
    ],
    [
      'wrong name',
      (s) => s.map((t, i) => (i === 2 ? { ...t, name: 'other' } : t)),
      'tensor #2: expected "other" [], got "scalar" []',
    ],
    [
      'different order',
      (s) => [s[1], s[0], s[2], s[3]] as typeof s,
      'tensor #0: expected "encoder/conv1/bias" [3], got "encoder/conv1/kernel" [3,3,1,2]',
    ],
    [
      'one more expected',
      (s) => [...s, { name: 'extra', shape: [1] }],
      'missing tensor #4 "extra": expected 5 tensors, got 4',
    ],
    ['one fewer expected', (s) => s.slice(0, 3), 'unexpected tensor #3 "empty": expected 3 tensors, got 4'],
  ])('%s', (_name, bend, message) => {
    const e = thrown(() => decodeWeights(bytes, bend(spec)));
    expect(e.code).toBe('MODEL_WEIGHTS_MISMATCH');
    expect(e.message).toBe(message);
  });
});
