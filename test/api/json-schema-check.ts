/**
 * A small JSON Schema checker for the subset the OpenAPI document uses (type, enum, const,
 * properties/required/additionalProperties, items, anyOf/oneOf/allOf, $ref into
 * `#/components/schemas`, pattern, minimum/maximum). Returns the problems found, each with the
 * JSON path where it is; an empty list means the value matches.
 */
export type Schema = Record<string, unknown>;

export function checkJsonSchema(
  value: unknown,
  schema: Schema,
  components: Record<string, Schema>,
): string[] {
  const problems: string[] = [];
  walk(value, schema, '$', components, problems);
  return problems;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function walk(v: unknown, s: Schema, at: string, components: Record<string, Schema>, out: string[]): void {
  if (typeof s['$ref'] === 'string') {
    const name = (s['$ref'] as string).replace('#/components/schemas/', '');
    const target = components[name];
    if (!target) out.push(`${at}: unresolved $ref ${String(s['$ref'])}`);
    else walk(v, target, at, components, out);
    return;
  }
  const sub = (schemas: unknown) => (schemas as Schema[]).map((x) => checkJsonSchemaAt(v, x, at, components));
  if (Array.isArray(s['allOf'])) for (const p of sub(s['allOf'])) out.push(...p);
  if (Array.isArray(s['anyOf']) && !sub(s['anyOf']).some((p) => p.length === 0))
    out.push(`${at}: matches none of anyOf (${JSON.stringify(v)?.slice(0, 80)})`);
  if (Array.isArray(s['oneOf']) && sub(s['oneOf']).filter((p) => p.length === 0).length !== 1)
    out.push(`${at}: does not match exactly one of oneOf`);
  if ('const' in s && v !== s['const']) out.push(`${at}: expected ${JSON.stringify(s['const'])}`);
  if (Array.isArray(s['enum']) && !(s['enum'] as unknown[]).includes(v))
    out.push(`${at}: ${JSON.stringify(v)} not in enum ${JSON.stringify(s['enum'])}`);
  const t = s['type'];
  if (t !== undefined) {
    const types = Array.isArray(t) ? (t as string[]) : [t as string];
    const actual = typeOf(v);
    if (!types.includes(actual) && !(actual === 'integer' && types.includes('number'))) {
      out.push(`${at}: expected ${types.join('|')}, got ${actual}`);
      return;
    }
  }
  if (typeof v === 'string' && typeof s['pattern'] === 'string' && !new RegExp(s['pattern']).test(v))
    out.push(`${at}: "${v.slice(0, 40)}" does not match ${String(s['pattern'])}`);
  if (typeof v === 'number') {
    if (typeof s['minimum'] === 'number' && v < s['minimum']) out.push(`${at}: below minimum`);
    if (typeof s['maximum'] === 'number' && v > s['maximum']) out.push(`${at}: above maximum`);
  }
  if (Array.isArray(v) && s['items'] && typeof s['items'] === 'object')
    v.forEach((x, i) => walk(x, s['items'] as Schema, `${at}[${i}]`, components, out));
  if (typeOf(v) === 'object') {
    const o = v as Record<string, unknown>;
    const props = (s['properties'] ?? {}) as Record<string, Schema>;
    for (const r of (s['required'] ?? []) as string[]) if (!(r in o)) out.push(`${at}.${r}: required`);
    for (const [k, x] of Object.entries(o)) {
      if (props[k]) walk(x, props[k], `${at}.${k}`, components, out);
      else if (s['additionalProperties'] === false) out.push(`${at}.${k}: not allowed`);
      else if (s['additionalProperties'] && typeof s['additionalProperties'] === 'object')
        walk(x, s['additionalProperties'] as Schema, `${at}.${k}`, components, out);
    }
  }
}

function checkJsonSchemaAt(v: unknown, s: Schema, at: string, components: Record<string, Schema>): string[] {
  const out: string[] = [];
  walk(v, s, at, components, out);
  return out;
}
