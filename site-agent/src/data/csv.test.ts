import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseCsv, parseCsvTable } from './csv';

describe('parseCsv', () => {
  it('handles quotes, commas and newlines in quotes, escaped quotes, CRLF, BOM, no final newline', () => {
    const text = '\ufefffile,patient_id,note\r\n"a,b.png",P1,"say ""hi"""\r\n\r\nc.png,"P\n2",\nd.png,P3,x';
    expect(parseCsv(text)).toEqual([
      ['file', 'patient_id', 'note'],
      ['a,b.png', 'P1', 'say "hi"'],
      ['c.png', 'P\n2', ''],
      ['d.png', 'P3', 'x'],
    ]);
  });

  it('rejects an unterminated quote and junk after a closing quote, with a line number', () => {
    expect(() => parseCsv('a,b\n"open,x\n')).toThrow('CSV line 3: unterminated quoted field');
    expect(() => parseCsv('a,b\n"x"y,z\n')).toThrow('CSV line 2: unexpected character after a closing quote');
  });

  it('round-trips any table written with RFC 4180 quoting', () => {
    const field = fc.string({ unit: fc.constantFrom('a', 'b', ',', '"', '\n', '\r', ' ', 'é') });
    fc.assert(
      fc.property(
        fc.array(fc.array(field, { minLength: 2, maxLength: 4 }), { minLength: 1, maxLength: 5 }),
        (rows) => {
          const text = rows.map((r) => r.map((f) => `"${f.replace(/"/g, '""')}"`).join(',')).join('\r\n');
          expect(parseCsv(text)).toEqual(rows);
        },
      ),
    );
  });
});

describe('parseCsvTable', () => {
  it('keys records by trimmed header names', () => {
    expect(parseCsvTable(' file , patient_id\nx.png,P1\n')).toEqual({
      header: ['file', 'patient_id'],
      records: [{ file: 'x.png', patient_id: 'P1' }],
    });
  });

  it('reports field count mismatches by record number without the values', () => {
    expect(() => parseCsvTable('file,patient_id\nx.png,SECRET-ID,extra\n')).toThrow(
      'CSV manifest record 1: expected 2 fields, got 3',
    );
    expect(() => parseCsvTable('file,file\n')).toThrow('CSV manifest: duplicate column "file"');
    expect(() => parseCsvTable('')).toThrow('CSV manifest is empty');
  });
});
