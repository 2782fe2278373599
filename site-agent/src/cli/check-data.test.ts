import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkDataCommand } from './check-data';
import type { CliIo } from './commands';

const DICOM_DIR = resolve(__dirname, '../../../../shared/data/dicom');

function captureIo(): CliIo & { lines: string[] } {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l) };
}

describe('check-data on a DICOM folder', () => {
  beforeAll(() => {
    if (!existsSync(join(DICOM_DIR, 'MR_small.dcm')))
      throw new Error(
        `real DICOM fixtures missing: expected ${DICOM_DIR} (../shared/data/dicom, see SOURCES.md)`,
      );
  });

  it('--json: counts, readable/unreadable with reasons, sizes, intensity, tags; no identifiers', async () => {
    const io = captureIo();
    expect(await checkDataCommand({ data: DICOM_DIR, imageSize: 16, json: true }, io)).toBe(0);
    const text = io.lines.join('\n');
    const r = JSON.parse(text) as Record<string, unknown>;
    expect(r).toMatchObject({
      source: 'dicom',
      items: 16,
      readableItems: 10,
      images: 10,
      patients: 4,
      sizes: { minWidth: 3, maxWidth: 256, minHeight: 3, maxHeight: 1024 },
    });
    const intensity = r.intensity as { mean: number; min: number; max: number };
    // Resized (area averaging) from windowed images spanning [0, 1].
    expect(intensity.min).toBeLessThan(0.05);
    expect(intensity.max).toBeGreaterThan(0.9);
    expect(intensity.mean).toBeGreaterThan(0.05);
    expect(intensity.mean).toBeLessThan(0.8);
    expect(r.skippedDetails).toContainEqual({
      reason: 'truncated',
      detail: 'the file ends inside a data element (truncated)',
      count: 1,
    });
    expect(Object.keys(r.columns as object)).toEqual([
      'Modality',
      'BodyPartExamined',
      'Manufacturer',
      'StudyInstanceUID',
    ]);
    for (const raw of ['1CT1', '4MR1', '1.3.6.1.4.1.5962', 'MR_small']) expect(text).not.toContain(raw);
  });

  it('human table', async () => {
    const io = captureIo();
    await checkDataCommand({ data: DICOM_DIR, imageSize: 16 }, io);
    const text = io.lines.join('\n');
    expect(text).toContain('Source:            folder of DICOM files');
    expect(text).toContain('Items:             16 (10 readable, 6 unreadable)');
    expect(text).toContain('Patients:          4');
    expect(text).toMatch(/ {2}Modality +10 with a value, 5 distinct: CT 1, MR 6, NM 1, OT 1, US 1/);
    expect(text).toMatch(/ {2}no-pixel-data +1 {2}no Pixel Data element \(Modality RTPLAN\)/);
    expect(text).not.toContain('4MR1');
  });
});
