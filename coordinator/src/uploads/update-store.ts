import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { decodeWeights, l2Norm, type NamedTensors } from '@fedssl/shared/codec';
import { UpdateOpener } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';
import type { UpdateHeader } from '@fedssl/shared/protocol';
import { faultPoint } from '../faults/fault-hook';
import { whenOutOfSpace } from '../faults/storage-full';
import { DEFAULT_OPENED_UPDATES_MIB, OpenedUpdates } from './opened-updates';

/** Poly1305 tag added to every encrypted chunk. */
const TAG_BYTES = 16;

/** Ciphertext length of chunk `index` of an envelope described by `header`. */
export function chunkCiphertextLength(header: UpdateHeader, index: number): number {
  const { chunkCount, chunkSize, plaintextBytes } = header;
  const plain = index < chunkCount - 1 ? chunkSize : plaintextBytes - (chunkCount - 1) * chunkSize;
  return plain + TAG_BYTES;
}

/** Byte offset of chunk `index` in the envelope (every chunk but the last is full size). */
function chunkOffset(header: UpdateHeader, index: number): number {
  return index * (header.chunkSize + TAG_BYTES);
}

/**
 * Where update envelopes live on disk: partial uploads in `<dataDir>/uploads/<id>.part`,
 * accepted ones in `<dataDir>/updates/<runId>/<round>/<siteId>.env` with the signed header
 * beside them as `<siteId>.header.json`. Files, not memory: an accepted update survives a
 * restart and is read back one at a time at aggregation.
 *
 * A part file holds whole, fsynced chunks only, and its name derives from the task and the
 * envelope's signature, so after a coordinator restart the same envelope begun again finds
 * its part file and resumes after the last chunk that reached the disk.
 *
 * What commit opened is kept in {@link opened} until aggregation (see {@link OpenedUpdates}),
 * so the normal path opens each update once; {@link readAcceptedDelta} falls back to the file.
 */
export class UpdateStore {
  /** Accepted updates as commit opened them, by update id (memory only). */
  readonly opened: OpenedUpdates;

  /** `openedBudgetBytes`: memory for {@link opened} (default 1 GiB; 0 = re-open every update at aggregation). */
  constructor(
    readonly dataDir: string,
    options: { openedBudgetBytes?: number } = {},
  ) {
    this.opened = new OpenedUpdates(options.openedBudgetBytes ?? DEFAULT_OPENED_UPDATES_MIB * 1024 * 1024);
  }

  partPath(uploadId: string): string {
    return join(this.dataDir, 'uploads', `${uploadId}.part`);
  }

  acceptedPaths(runId: string, round: number, siteId: string): { envelopePath: string; headerPath: string } {
    const dir = join(this.dataDir, 'updates', runId, String(round));
    return { envelopePath: join(dir, `${siteId}.env`), headerPath: join(dir, `${siteId}.header.json`) };
  }

  /** The upload id of an envelope: the same task and signature always get the same one. */
  uploadIdFor(taskId: string, signature: string): string {
    const digest = createHash('sha256').update(`fedssl-upload\n${taskId}\n${signature}`).digest('hex');
    return `up-${digest.slice(0, 32)}`;
  }

  /**
   * Opens the part file of an upload, creating it empty if there is none, and returns the
   * index of the first chunk it lacks. A torn tail (a crash mid-write) is cut off at the
   * last whole chunk.
   * @throws FedsslError STORAGE_FULL
   */
  openPart(uploadId: string, header: UpdateHeader): number {
    const path = this.partPath(uploadId);
    return whenOutOfSpace('an upload part file', () => {
      mkdirSync(dirname(path), { recursive: true });
      if (!existsSync(path)) {
        writeFileSync(path, new Uint8Array(0));
        return 0;
      }
      const fd = openSync(path, 'r+');
      try {
        const size = fstatSync(fd).size;
        let next = 0;
        while (
          next < header.chunkCount &&
          chunkOffset(header, next) + chunkCiphertextLength(header, next) <= size
        )
          next++;
        const keep = next === 0 ? 0 : chunkOffset(header, next - 1) + chunkCiphertextLength(header, next - 1);
        if (keep !== size) ftruncateSync(fd, keep);
        return next;
      } finally {
        closeSync(fd);
      }
    });
  }

  /**
   * Writes chunk `index` at its place in the part file and fsyncs it, so a chunk is
   * acknowledged only once it is on disk. On failure the file is cut back to the chunks
   * before it: a retry appends cleanly.
   * @throws FedsslError STORAGE_FULL when the disk is full
   */
  writeChunk(uploadId: string, header: UpdateHeader, index: number, data: Uint8Array): void {
    const at = chunkOffset(header, index);
    const fd = openSync(this.partPath(uploadId), 'r+');
    try {
      whenOutOfSpace('an upload chunk', () => {
        try {
          faultPoint('upload.chunk-write', { runId: header.runId, round: header.round });
          let off = 0;
          while (off < data.length) off += writeSync(fd, data, off, data.length - off, at + off);
          fsyncSync(fd);
        } catch (e) {
          ftruncateSync(fd, at);
          throw e;
        }
      });
    } finally {
      closeSync(fd);
    }
  }

  removePart(uploadId: string): void {
    rmSync(this.partPath(uploadId), { force: true });
  }

  /**
   * Moves a verified part file to its accepted place and writes the signed header beside
   * it (header first, then the rename, so an `.env` never exists without its header).
   */
  promote(
    uploadId: string,
    runId: string,
    round: number,
    siteId: string,
    header: UpdateHeader,
    signature: string,
  ) {
    const paths = this.acceptedPaths(runId, round, siteId);
    const tmp = `${paths.headerPath}.tmp`;
    whenOutOfSpace("an accepted update's header", () => {
      try {
        mkdirSync(dirname(paths.envelopePath), { recursive: true });
        writeFileSync(tmp, JSON.stringify({ header, signature }));
      } catch (e) {
        rmSync(tmp, { force: true });
        throw e;
      }
    });
    renameSync(tmp, paths.headerPath);
    renameSync(this.partPath(uploadId), paths.envelopePath);
    return paths;
  }

  /** Reads the `{header, signature}` written by {@link promote}. */
  readHeader(headerPath: string): { header: UpdateHeader; signature: string } {
    return JSON.parse(readFileSync(headerPath, 'utf8')) as { header: UpdateHeader; signature: string };
  }

  /**
   * Decrypts an envelope file ({@link openEnvelopeFile}) into a buffer from
   * {@link OpenedUpdates.buffers}: the one place the coordinator opens an update, at commit and,
   * when {@link opened} does not hold it, at aggregation.
   */
  openEnvelope(path: string, header: UpdateHeader, coordinatorBoxSecretKey: Uint8Array): Uint8Array {
    let plain: Uint8Array | undefined;
    try {
      return openEnvelopeFile(
        path,
        header,
        coordinatorBoxSecretKey,
        (n) => (plain = this.opened.buffers.acquire(n)),
      );
    } catch (e) {
      // Nothing saw what was decrypted so far: the buffer can serve the next update.
      if (plain) this.opened.buffers.recycle([plain]);
      throw e;
    }
  }

  /**
   * {@link decodeDelta} of a plaintext {@link openEnvelope} returned. Its buffer goes back to
   * the pool at once when the decode fails or the tensors are copies (float16, int8); when
   * they are views of it (float32), it goes back through {@link recycle} after aggregation.
   */
  decodeOpened(plain: Uint8Array, model: ModelConfig, maxUpdateNorm: number): NamedTensors {
    let tensors: NamedTensors;
    try {
      tensors = decodeDelta(plain, model, maxUpdateNorm);
    } catch (e) {
      this.opened.buffers.recycle([plain]);
      throw e;
    }
    if (!tensors.some((t) => t.data.buffer === plain.buffer)) this.opened.buffers.recycle([plain]);
    return tensors;
  }

  /**
   * Gives the plaintext buffers under deltas {@link readAcceptedDelta} returned back for the
   * next updates. Call once aggregation is over (the strategy has returned or thrown): the
   * deltas must not be used afterwards.
   */
  recycle(deltas: readonly NamedTensors[]): void {
    this.opened.buffers.recycle(deltas.flatMap((d) => d.map((t) => t.data)));
  }

  /** The plaintext of an accepted update from its sealed file (the header beside it names the key). */
  private reopen(u: AcceptedUpdateRef, boxKeyFor: (header: UpdateHeader) => Uint8Array): Uint8Array {
    const { header } = this.readHeader(u.headerPath);
    return this.openEnvelope(u.envelopePath, header, boxKeyFor(header));
  }

  /**
   * The validated delta of an accepted update for aggregation: the one commit decoded if it is
   * still held (and no longer held after this call), else opened and decoded again from its
   * sealed file, which gives the same values. Hand it to {@link recycle} once aggregation is over.
   */
  readAcceptedDelta(
    u: AcceptedUpdateRef,
    boxKeyFor: (header: UpdateHeader) => Uint8Array,
    model: ModelConfig,
    maxUpdateNorm: number,
  ): NamedTensors {
    const held = this.opened.take(u.id);
    if (held?.kind === 'delta') return held.tensors;
    return this.decodeOpened(this.reopen(u, boxKeyFor), model, maxUpdateNorm);
  }

  /** The opened plaintext of an accepted masked update (secure aggregation), as {@link readAcceptedDelta}. */
  readAcceptedPlain(u: AcceptedUpdateRef, boxKeyFor: (header: UpdateHeader) => Uint8Array): Uint8Array {
    const held = this.opened.take(u.id);
    if (held?.kind === 'masked') return held.plain;
    return this.reopen(u, boxKeyFor);
  }
}

/** Where an accepted update is: its id and the files {@link UpdateStore.promote} wrote. */
export interface AcceptedUpdateRef {
  id: string;
  envelopePath: string;
  headerPath: string;
}

/**
 * Decrypts an envelope file chunk by chunk through {@link UpdateOpener} (chunk boundaries
 * come from the signed header), checks count and SHA-512, and returns the plaintext.
 * The plaintext buffer (from `allocate`, default a new one) is sized from the file actually
 * received, never from a claimed size.
 * @throws FedsslError ENVELOPE_* on any authentication, count or length problem.
 */
export function openEnvelopeFile(
  path: string,
  header: UpdateHeader,
  coordinatorBoxSecretKey: Uint8Array,
  allocate: (bytes: number) => Uint8Array = (n) => new Uint8Array(n),
): Uint8Array {
  const opener = new UpdateOpener(header, coordinatorBoxSecretKey);
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const expected = header.plaintextBytes + TAG_BYTES * header.chunkCount;
    if (size !== expected) {
      throw new FedsslError(
        'ENVELOPE_CHUNK_COUNT',
        `envelope is ${size} bytes, the header describes ${expected}`,
      );
    }
    const plain = allocate(header.plaintextBytes);
    // One read buffer for all chunks, and each chunk decrypted in place into `plain`.
    const buf = new Uint8Array(Math.min(header.chunkSize, header.plaintextBytes) + TAG_BYTES);
    let inOff = 0;
    let outOff = 0;
    for (let i = 0; i < header.chunkCount; i++) {
      const len = chunkCiphertextLength(header, i);
      const ct = buf.subarray(0, len);
      readSync(fd, ct, 0, len, inOff);
      inOff += len;
      opener.openChunkInto(i, ct, plain.subarray(outOff, outOff + len - TAG_BYTES));
      outOff += len - TAG_BYTES;
    }
    opener.finish();
    return plain;
  } finally {
    opener.dispose();
    closeSync(fd);
  }
}

/**
 * Decodes an update's plaintext (float32, float16 or int8 deltas, all to float32) against
 * the run's shared parameter specs and applies the content checks: names/shapes
 * (MODEL_WEIGHTS_MISMATCH), finiteness (UPDATE_NOT_FINITE), L2 norm bound (UPDATE_NORM_TOO_LARGE).
 */
export function decodeDelta(plaintext: Uint8Array, model: ModelConfig, maxUpdateNorm: number): NamedTensors {
  const expect = sharedParamSpecs(model).map((s) => ({ name: s.name, shape: s.shape }));
  // The tensors may view `plaintext` (no copy): the caller drops both together.
  const { tensors } = decodeWeights(plaintext, expect, { copy: false });
  // One pass: the float64 sum of squares of finite float32 values cannot overflow, so a
  // non-finite norm means a NaN or infinite value.
  const norm = l2Norm(tensors);
  if (!Number.isFinite(norm))
    throw new FedsslError('UPDATE_NOT_FINITE', 'update contains NaN or infinite values');
  if (!(norm <= maxUpdateNorm)) {
    throw new FedsslError(
      'UPDATE_NORM_TOO_LARGE',
      `update L2 norm ${norm.toPrecision(6)} exceeds the run's bound ${maxUpdateNorm}`,
      {
        norm,
        maxUpdateNorm,
      },
    );
  }
  return tensors;
}
