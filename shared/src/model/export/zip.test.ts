import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { storedZip } from './zip';

describe('storedZip', () => {
  it('is read back by an independent reader (Python zipfile) with the same names and bytes', () => {
    const weights = new Uint8Array(70_000).map((_, i) => (i * 31) % 251);
    const zip = storedZip([
      { name: 'model.json', data: new TextEncoder().encode('{"format":"layers-model"}') },
      { name: 'weights.bin', data: weights },
      { name: 'docs/MODEL_CARD.md', data: new TextEncoder().encode('# é\n') },
    ]);
    const file = join(mkdtempSync(join(tmpdir(), 'fedssl-zip-')), 'm.zip');
    writeFileSync(file, zip);
    const py = [
      'import hashlib, json, sys, zipfile',
      'z = zipfile.ZipFile(sys.argv[1])',
      'assert z.testzip() is None',
      'print(json.dumps([[i.filename, i.compress_type, hashlib.sha256(z.read(i)).hexdigest()] for i in z.infolist()]))',
    ].join('\n');
    const out = JSON.parse(execFileSync('python3', ['-c', py, file], { encoding: 'utf8' })) as unknown[];
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    expect(out).toEqual([
      ['model.json', 0, sha(new TextEncoder().encode('{"format":"layers-model"}'))],
      ['weights.bin', 0, sha(weights)],
      ['docs/MODEL_CARD.md', 0, sha(new TextEncoder().encode('# é\n'))],
    ]);
  });

  it('gives the same bytes for the same files', () => {
    const e = [{ name: 'a', data: Uint8Array.of(1, 2, 3) }];
    expect(storedZip(e)).toEqual(storedZip(e));
    expect(storedZip([]).length).toBe(22);
  });
});
