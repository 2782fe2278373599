import { FedsslError } from '../errors';

/**
 * Deterministic JSON for signing: object keys sorted (UTF-16 code unit order, as
 * JSON Canonicalization Scheme, RFC 8785), no whitespace, numbers in JavaScript's shortest
 * round-trip form. Anything JSON cannot carry faithfully is rejected rather than silently
 * dropped or turned into `null`, so what is signed is exactly what the receiver parses.
 *
 * @throws FedsslError CRYPTO_INVALID_ARGUMENT naming the JSON path of the offending value.
 * @example canonicalJson({ b: 1, a: [true, null] }) === '{"a":[true,null],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  return encode(value, '$', new Set());
}

function fail(path: string, what: string): never {
  throw new FedsslError('CRYPTO_INVALID_ARGUMENT', `canonicalJson: ${what} at ${path} cannot be signed`);
}

function encode(value: unknown, path: string, seen: Set<object>): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) fail(path, `non-finite number ${String(value)}`);
      // JSON.stringify(-0) === '0', which is what we want: -0 and 0 sign the same.
      return JSON.stringify(value);
    case 'undefined':
      return fail(path, 'undefined');
    case 'function':
      return fail(path, 'function');
    case 'bigint':
      return fail(path, 'bigint');
    case 'symbol':
      return fail(path, 'symbol');
    case 'object':
      break;
  }
  if (value === null) return 'null';
  const obj = value as object;
  if (seen.has(obj)) fail(path, 'circular reference');
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      const parts: string[] = [];
      for (let i = 0; i < obj.length; i++) {
        // Sparse arrays: a hole reads as undefined and is rejected like one.
        parts.push(encode((obj as unknown[])[i], `${path}[${i}]`, seen));
      }
      return `[${parts.join(',')}]`;
    }
    const proto: unknown = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const name = (obj as { constructor?: { name?: string } }).constructor?.name ?? 'unknown';
      fail(path, `non-plain object (${name})`);
    }
    if (Object.getOwnPropertySymbols(obj).length > 0) fail(path, 'symbol-keyed property');
    const keys = Object.keys(obj).sort();
    const parts: string[] = [];
    for (const key of keys) {
      const child = (obj as Record<string, unknown>)[key];
      parts.push(`${JSON.stringify(key)}:${encode(child, `${path}.${key}`, seen)}`);
    }
    return `{${parts.join(',')}}`;
  } finally {
    seen.delete(obj);
  }
}
