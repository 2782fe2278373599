import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { canonicalJson } from './canonical-json';

/** Rebuild a JSON value with every object's keys inserted in reverse order. */
function reverseKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(reverseKeys);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    // defineProperty, not assignment: fast-check generates "__proto__" keys.
    for (const k of Object.keys(v).reverse()) {
      Object.defineProperty(out, k, {
        value: reverseKeys((v as Record<string, unknown>)[k]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  return v;
}

describe('canonicalJson', () => {
  it('sorts keys recursively and drops whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: null, y: 'x' }], c: true } })).toBe(
      '{"a":{"c":true,"d":[3,{"y":"x","z":null}]},"b":1}',
    );
  });

  it('is independent of key insertion order and parses back to an equal value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const s = canonicalJson(v);
        expect(canonicalJson(reverseKeys(v))).toBe(s);
        expect(s).not.toMatch(/\n/);
        // Parse back: equal up to -0 (JSON has no negative zero).
        expect(canonicalJson(JSON.parse(s))).toBe(s);
      }),
      { numRuns: 300 },
    );
  });

  it('sorts by UTF-16 code units and escapes like JSON', () => {
    expect(canonicalJson({ é: 1, z: 2, A: 3, '\n': 4 })).toBe('{"\\n":4,"A":3,"z":2,"é":1}');
  });

  it('writes numbers in shortest round-trip form', () => {
    expect(canonicalJson([1e21, 0.1, -0, 1.5e-7, 100])).toBe('[1e+21,0.1,0,1.5e-7,100]');
  });

  it.each([
    [{ a: undefined }, 'undefined at $.a'],
    [{ a: [1, () => 1] }, 'function at $.a[1]'],
    [{ n: NaN }, 'non-finite number NaN at $.n'],
    [[Infinity], 'non-finite number Infinity at $[0]'],
    [{ d: new Date(0) }, 'non-plain object (Date) at $.d'],
    [{ m: new Map() }, 'non-plain object (Map) at $.m'],
    [{ u: new Uint8Array(2) }, 'non-plain object (Uint8Array) at $.u'],
    [{ b: 1n }, 'bigint at $.b'],
    [undefined, 'undefined at $'],
  ])('rejects %o', (value, message) => {
    expect(() => canonicalJson(value)).toThrow(`canonicalJson: ${message} cannot be signed`);
  });

  it('rejects cycles but allows shared (acyclic) references', () => {
    const shared = { x: 1 };
    expect(canonicalJson({ a: shared, b: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    expect(() => canonicalJson(cyc)).toThrow('circular reference at $.self');
  });

  it('accepts null-prototype objects', () => {
    const o = Object.create(null) as Record<string, unknown>;
    o.b = 2;
    o.a = 1;
    expect(canonicalJson(o)).toBe('{"a":1,"b":2}');
  });
});
