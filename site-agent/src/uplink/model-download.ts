import type { Logger } from 'pino';
import { decodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import { canonicalJson, createSha256, verifySignedModelManifest } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { sharedParamSpecs } from '@fedssl/shared/model';
import type { ModelManifest, Task } from '@fedssl/shared/protocol';
import { retry, systemClock, type Clock } from './backoff';
import { asCodedError, type Uplink } from './uplink';

/** Bytes asked for per `model:chunk` request (memory per message stays bounded). */
export const MODEL_CHUNK_BYTES = 1024 * 1024;

/** A verified global model. */
export interface DownloadedModel {
  manifest: ModelManifest;
  weights: NamedTensors;
  bytes: number;
  sha256: string;
}

/**
 * Fetch the global model a task names and check everything before anything trains on it:
 * the manifest's signature against the PINNED coordinator key, that it is the version,
 * hash and architecture the (already verified) task names, then the SHA-256 of the bytes
 * and their decoding against the expected parameter names and shapes.
 * @throws FedsslError MANIFEST_SIGNATURE_INVALID, MODEL_HASH_MISMATCH, MODEL_CONFIG_INVALID,
 *   MODEL_WEIGHTS_MISMATCH, CODEC_*, or the coordinator's error code.
 */
export async function downloadModel(args: DownloadArgs): Promise<DownloadedModel> {
  // A lost link (e.g. the coordinator restarted) must not fail the task: the restarted
  // coordinator offers the same task again on reconnect, which the agent acknowledges as
  // already running. So wait until the client is authenticated again and download afresh,
  // as uploadUpdate does; only COORDINATOR_UNREACHABLE is retried, never a refusal or a
  // verification failure.
  return retry(
    async () => {
      await args.uplink.ready(args.signal);
      return fetchAndVerify(args);
    },
    {
      attempts: args.attempts ?? 6,
      clock: args.clock ?? systemClock,
      ...(args.signal ? { signal: args.signal } : {}),
      isRetryable: (e) => asCodedError(e)?.code === 'COORDINATOR_UNREACHABLE',
      onRetry: (e, attempt, delayMs) =>
        args.logger.warn(
          { attempt, delayMs, err: (e as Error).message },
          'model download interrupted, will retry',
        ),
    },
  );
}

interface DownloadArgs {
  uplink: Uplink;
  task: Task;
  coordinatorSigningKey: Uint8Array;
  logger: Logger;
  chunkBytes?: number;
  signal?: AbortSignal;
  /** Tries on COORDINATOR_UNREACHABLE (default 6), spaced by the reconnection backoff. */
  attempts?: number;
  clock?: Clock;
}

async function fetchAndVerify(args: DownloadArgs): Promise<DownloadedModel> {
  const { uplink, task } = args;
  const signed = await uplink.request('model:manifest', { version: task.modelVersion });
  const manifest = verifySignedModelManifest(
    { manifest: signed.manifest, signature: signed.signature, keyId: signed.keyId },
    args.coordinatorSigningKey,
  );
  if (manifest.version !== task.modelVersion) {
    throw new FedsslError(
      'MODEL_HASH_MISMATCH',
      `coordinator sent manifest of version ${manifest.version}, the task names ${task.modelVersion}`,
    );
  }
  if (manifest.weightsSha256 !== task.modelHash) {
    throw new FedsslError(
      'MODEL_HASH_MISMATCH',
      `manifest weights hash ${manifest.weightsSha256} differs from the task's ${task.modelHash}`,
    );
  }
  if (canonicalJson(manifest.model) !== canonicalJson(task.model)) {
    throw new FedsslError(
      'MODEL_CONFIG_INVALID',
      'the model manifest describes a different architecture than the task',
    );
  }
  const total = manifest.weightsBytes;
  const step = Math.max(1, Math.min(args.chunkBytes ?? MODEL_CHUNK_BYTES, MODEL_CHUNK_BYTES));
  const bytes = new Uint8Array(total);
  const hash = createSha256();
  for (let offset = 0; offset < total;) {
    args.signal?.throwIfAborted();
    const length = Math.min(step, total - offset);
    const { data } = await uplink.request('model:chunk', { version: manifest.version, offset, length });
    if (!(data instanceof Uint8Array) || data.byteLength !== length) {
      throw new FedsslError(
        'PROTOCOL_INVALID_MESSAGE',
        `model chunk at offset ${offset}: expected ${length} bytes, got ${data instanceof Uint8Array ? data.byteLength : typeof data}`,
      );
    }
    bytes.set(data, offset);
    hash.update(data);
    offset += length;
  }
  const sha256 = hash.digestHex();
  if (sha256 !== task.modelHash) {
    throw new FedsslError(
      'MODEL_HASH_MISMATCH',
      `downloaded weights hash ${sha256} differs from the signed ${task.modelHash}`,
    );
  }
  const { tensors } = decodeWeights(bytes, sharedParamSpecs(task.model));
  args.logger.info({ modelVersion: manifest.version, bytes: total }, 'global model downloaded and verified');
  return { manifest, weights: tensors, bytes: total, sha256 };
}
