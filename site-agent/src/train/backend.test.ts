import { Writable } from 'node:stream';
import * as tf from '@tensorflow/tfjs-core';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { selectBackend } from './backend';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

describe('selectBackend', () => {
  it('auto falls back to wasm here (native packages absent) and says why, once', async () => {
    const { logger, lines } = capture();
    const info = await selectBackend(logger, 'auto');
    expect(info).toEqual({ name: 'wasm', accelerator: 'cpu', native: false });
    expect(tf.getBackend()).toBe('wasm');
    expect(lines).toHaveLength(1);
    const skipped = lines[0]!.skipped as { backend: string; reason: string }[];
    expect(skipped.map((s) => s.backend)).toEqual(['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
    expect(skipped[0]!.reason).toBe('@tensorflow/tfjs-node-gpu is not installed');
  });

  it('honours cpu and refuses an unavailable explicit tensorflow backend', async () => {
    const { logger } = capture();
    expect(await selectBackend(logger, 'cpu')).toEqual({ name: 'cpu', accelerator: 'cpu', native: false });
    expect(tf.getBackend()).toBe('cpu');
    await expect(selectBackend(logger, 'tensorflow')).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
  });
});
