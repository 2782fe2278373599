import { FedsslError } from '@fedssl/shared/errors';

/**
 * A small RFC 4180 CSV reader for image manifests (no dependency is installed for this,
 * and manifests are small). Handles quoted fields, commas, quotes ("") and newlines inside
 * quotes, CRLF or LF line ends, a UTF-8 byte-order mark, and a missing final newline.
 * Blank lines are ignored.
 */

/**
 * Split CSV text into rows of fields.
 * @throws FedsslError DATA_SOURCE_INVALID on an unterminated quote or text after a closing quote.
 * @example parseCsv('a,"b,c"\r\n1,2') // [['a', 'b,c'], ['1', '2']]
 */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let inQuotes = false;
  let afterQuote = false; // just closed a quoted field: only a separator may follow
  let line = 1;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const endRow = () => {
    row.push(field);
    field = '';
    // A line with one empty field is a blank line, not a record.
    if (!(row.length === 1 && row[0] === '')) rows.push(row);
    row = [];
  };
  for (; i < text.length; i++) {
    const ch = text[i]!;
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          inQuotes = false;
          afterQuote = true;
        }
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
      continue;
    }
    if (ch === ',') {
      row.push(field);
      field = '';
      afterQuote = false;
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      endRow();
      afterQuote = false;
      line++;
    } else if (afterQuote) {
      throw new FedsslError(
        'DATA_SOURCE_INVALID',
        `CSV line ${line}: unexpected character after a closing quote`,
      );
    } else if (ch === '"' && field === '') {
      inQuotes = true;
    } else {
      field += ch;
    }
  }
  if (inQuotes) throw new FedsslError('DATA_SOURCE_INVALID', `CSV line ${line}: unterminated quoted field`);
  if (field !== '' || row.length > 0) endRow();
  return rows;
}

/** A CSV file read as a header and one record per row. */
export interface CsvTable {
  header: string[];
  records: Record<string, string>[];
}

/**
 * Parse CSV with a header row into records keyed by column name (header names trimmed).
 * @throws FedsslError DATA_SOURCE_INVALID on an empty file, duplicate column names or a
 *   row whose field count differs from the header's (line numbers are reported, values never).
 */
export function parseCsvTable(text: string): CsvTable {
  const rows = parseCsv(text);
  const headerRow = rows[0];
  if (!headerRow)
    throw new FedsslError('DATA_SOURCE_INVALID', 'CSV manifest is empty (expected a header row)');
  const header = headerRow.map((h) => h.trim());
  const seen = new Set<string>();
  for (const h of header) {
    if (seen.has(h)) throw new FedsslError('DATA_SOURCE_INVALID', `CSV manifest: duplicate column "${h}"`);
    seen.add(h);
  }
  const records = rows.slice(1).map((r, k) => {
    if (r.length !== header.length) {
      // Record numbers, not values: a value may be a patient identifier.
      throw new FedsslError(
        'DATA_SOURCE_INVALID',
        `CSV manifest record ${k + 1}: expected ${header.length} fields, got ${r.length}`,
      );
    }
    const rec: Record<string, string> = {};
    header.forEach((h, j) => {
      rec[h] = r[j]!;
    });
    return rec;
  });
  return { header, records };
}
