import { describe, expect, it } from 'vitest';
import { checkJsonSchema } from './json-schema-check';

const components = {
  Item: {
    type: 'object',
    properties: {
      id: { type: 'string', pattern: '^[a-z]+$' },
      n: { anyOf: [{ type: 'integer' }, { type: 'null' }] },
    },
    required: ['id', 'n'],
    additionalProperties: false,
  },
};
const list = { type: 'array', items: { $ref: '#/components/schemas/Item' } };

describe('checkJsonSchema', () => {
  it('accepts a matching value', () => {
    expect(
      checkJsonSchema(
        [
          { id: 'a', n: 1 },
          { id: 'b', n: null },
        ],
        list,
        components,
      ),
    ).toEqual([]);
  });

  it('names every mismatch with its path', () => {
    expect(checkJsonSchema([{ id: 'A', n: 1.5, extra: true }, { n: 'x' }, 3], list, components)).toEqual([
      '$[0].id: "A" does not match ^[a-z]+$',
      '$[0].n: matches none of anyOf (1.5)',
      '$[0].extra: not allowed',
      '$[1].id: required',
      '$[1].n: matches none of anyOf ("x")',
      '$[2]: expected object, got integer',
    ]);
    expect(checkJsonSchema('x', { type: 'string', enum: ['a'] }, {})).toEqual(['$: "x" not in enum ["a"]']);
    expect(checkJsonSchema(1, { $ref: '#/components/schemas/Nope' }, {})).toEqual([
      '$: unresolved $ref #/components/schemas/Nope',
    ]);
    expect(checkJsonSchema(1, { oneOf: [{ type: 'number' }, { type: 'integer' }] }, {})).toEqual([
      '$: does not match exactly one of oneOf',
    ]);
  });
});
