/**
 * Realistic update payloads for the envelope, transfer and load benchmarks: deltas with the
 * exact tensors (names, shapes, order) of a model preset's shared parameters, filled with
 * small deterministic values, and sealed in the real update envelope.
 */
import { encodeWeights, type DType, type NamedTensors } from '@fedssl/shared/codec';
import { sealUpdate, toBase64, type PartyKeys, type SealedUpdate } from '@fedssl/shared/crypto';
import {
  resnet18ModelConfig,
  sharedParamSpecs,
  tinyModelConfig,
  type ModelConfig,
} from '@fedssl/shared/model';
import { PROTOCOL_VERSION } from '@fedssl/shared/protocol';

/**
 * The model presets the benchmarks report on, by label. Batch norm, as when the figures in
 * docs/benchmarks.md were measured (its running statistics are part of the parameter count).
 */
export const MODEL_PRESETS: Record<string, () => ModelConfig> = {
  'tiny-32px': () => ({ ...tinyModelConfig(32), norm: 'batch' }),
  'resnet18-quarter-64px': () => ({ ...resnet18ModelConfig(64, [16, 16, 32, 64, 128]), norm: 'batch' }),
  'resnet18-224px': () => ({ ...resnet18ModelConfig(224), norm: 'batch' }),
};

export function parameterCountOf(model: ModelConfig): number {
  return sharedParamSpecs(model).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Gaussian-like deltas (sum of three uniforms, xorshift32) with standard deviation `std`:
 * deterministic per seed, cheap for millions of values, and with the bell shape real
 * deltas have, so quantization error figures are not flattered by a uniform distribution.
 */
export function syntheticDelta(model: ModelConfig, seed: number, std = 1e-3): NamedTensors {
  let x = (seed * 2654435761) >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296 - 0.5;
  };
  // Var of a sum of three U(-½, ½) is 3/12 = ¼, so ×2·std gives standard deviation std.
  const k = 2 * std;
  return sharedParamSpecs(model).map((s) => {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = (next() + next() + next()) * k;
    return { name: s.name, shape: s.shape.slice(), data };
  });
}

export interface SealArgs {
  site: PartyKeys;
  siteId: string;
  coordinatorBoxPublicKey: Uint8Array;
  chunkSize: number;
  /** Header fields a real task dictates; benchmarks without a coordinator take defaults. */
  task?: { runId: string; round: number; taskId: string; nonce: string; modelHash: string };
  exampleCount?: number;
}

/** Seal bytes to the coordinator in the real update envelope. */
export function sealPlaintext(plaintext: Uint8Array, a: SealArgs): SealedUpdate {
  const t = a.task ?? {
    runId: 'bench',
    round: 1,
    taskId: `task-${a.siteId}`,
    nonce: toBase64(new Uint8Array(32)),
    modelHash: '0'.repeat(64),
  };
  return sealUpdate({
    plaintext,
    fields: {
      protocolVersion: PROTOCOL_VERSION,
      siteId: a.siteId,
      runId: t.runId,
      round: t.round,
      taskId: t.taskId,
      taskNonce: t.nonce,
      baseModelHash: t.modelHash,
      exampleCount: a.exampleCount ?? 100,
      metrics: {},
      createdAt: new Date().toISOString(),
    },
    chunkSize: a.chunkSize,
    siteSigningSecretKey: a.site.signing.secretKey,
    coordinatorBoxPublicKey: a.coordinatorBoxPublicKey,
  });
}

/** Encode a delta (as `encoding`) and seal it, as the agent's task runner does. */
export function sealDelta(
  delta: NamedTensors,
  a: SealArgs & { encoding?: DType },
): { sealed: SealedUpdate; plaintextBytes: number } {
  const plaintext = encodeWeights(delta, { dtype: a.encoding ?? 'float32' });
  return { sealed: sealPlaintext(plaintext, a), plaintextBytes: plaintext.length };
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Wall and CPU (user + system) seconds of `fn`. */
export function timed<T>(fn: () => T): { value: T; wall: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const value = fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { value, wall, cpu: (c.user + c.system) / 1e6 };
}
