import { describe, expect, it } from 'vitest';
import { formatLedgerTable, summarizeTensors } from './ledger-table';

describe('ledger table', () => {
  it('aligns downloads and uploads, accepted and rejected, with tensors grouped by part', () => {
    const lines = formatLedgerTable([
      {
        kind: 'download',
        time: '2025-01-02T03:00:00.000Z',
        runId: 'run-1',
        round: 1,
        taskId: 't-1',
        modelVersion: 'run-1.r0',
        modelSha256: 'c'.repeat(64),
        bytes: 2048,
        verified: true,
      },
      {
        kind: 'upload',
        time: '2025-01-02T03:05:00.000Z',
        runId: 'run-1',
        round: 1,
        taskId: 't-1',
        modelVersion: 'run-1.r0',
        bytesSent: 999,
        plaintextSha256: 'd'.repeat(64),
        ciphertextSha512: 'e'.repeat(128),
        tensors: ['encoder.conv1.weight', 'encoder.bn1.weight', 'projector.0.weight'],
        exampleCount: 12,
        accepted: false,
        error: { code: 'UPDATE_NORM_EXCEEDED', message: 'too large' },
      },
    ]);
    expect(lines).toEqual([
      'TIME (UTC)                DIR  RUN    ROUND  TASK  BYTES  SHA-256            TENSORS                 EXAMPLES  RESULT',
      '------------------------  ---  -----  -----  ----  -----  -----------------  ----------------------  --------  -----------------------------',
      `2025-01-02T03:00:00.000Z  in   run-1      1  t-1    2048  ${'c'.repeat(16)}…  -                              -  model run-1.r0 verified`,
      `2025-01-02T03:05:00.000Z  out  run-1      1  t-1     999  ${'d'.repeat(16)}…  encoder 2, projector 1        12  REJECTED UPDATE_NORM_EXCEEDED`,
    ]);
    expect(summarizeTensors([])).toBe('');
  });

  it('shows the differential privacy applied before an upload as a dp row', () => {
    const lines = formatLedgerTable([
      {
        kind: 'privacy',
        time: '2025-01-02T03:04:00.000Z',
        runId: 'run-1',
        round: 2,
        taskId: 't-2',
        dp: { clipNorm: 1, noiseMultiplier: 0.8, noiseStd: 0.8, normBefore: 4.2, clipFactor: 0.238 },
      },
    ]);
    expect(lines[2]).toBe(
      '2025-01-02T03:04:00.000Z  dp   run-1      2  t-2       -  -        -               -  clip 1 (clipped), noise σ=0.8',
    );
  });
});
