import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { decodeWeights, allFinite, l2Norm, type NamedTensors } from '@fedssl/shared/codec';
import { UpdateOpener } from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import { sharedParamSpecs, type ModelConfig } from '@fedssl/shared/model';
import type { UpdateHeader } from '@fedssl/shared/protocol';

/** Poly1305 tag added to every encrypted chunk. */
const TAG_BYTES = 16;

/** Ciphertext length of chunk `index` of an envelope described by `header`. */
export function chunkCiphertextLength(header: UpdateHeader, index: number): number {
  const { chunkCount, chunkSize, plaintextBytes } = header;
  const plain = index < chunkCount - 1 ? chunkSize : plaintextBytes - (chunkCount - 1) * chunkSize;
  return plain + TAG_BYTES;
}

/**
 * Where update envelopes live on disk: partial uploads in `<dataDir>/uploads/<id>.part`,
 * accepted ones in `<dataDir>/updates/<runId>/<round>/<siteId>.env` with the signed header
 * beside them as `<siteId>.header.json`. Files, not memory: an accepted update survives a
 * restart and is read back one at a time at aggregation.
 */
export class UpdateStore {
  constructor(readonly dataDir: string) {}

  partPath(uploadId: string): string {
    return join(this.dataDir, 'uploads', `${uploadId}.part`);
  }

  acceptedPaths(runId: string, round: number, siteId: string): { envelopePath: string; headerPath: string } {
    const dir = join(this.dataDir, 'updates', runId, String(round));
    return { envelopePath: join(dir, `${siteId}.env`), headerPath: join(dir, `${siteId}.header.json`) };
  }

  /** Creates an empty part file (truncating any leftover). */
  createPart(uploadId: string): string {
    const path = this.partPath(uploadId);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, new Uint8Array(0));
    return path;
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
    mkdirSync(dirname(paths.envelopePath), { recursive: true });
    const tmp = `${paths.headerPath}.tmp`;
    writeFileSync(tmp, JSON.stringify({ header, signature }));
    renameSync(tmp, paths.headerPath);
    renameSync(this.partPath(uploadId), paths.envelopePath);
    return paths;
  }

  /** Reads the `{header, signature}` written by {@link promote}. */
  readHeader(headerPath: string): { header: UpdateHeader; signature: string } {
    return JSON.parse(readFileSync(headerPath, 'utf8')) as { header: UpdateHeader; signature: string };
  }
}

/**
 * Decrypts an envelope file chunk by chunk through {@link UpdateOpener} (chunk boundaries
 * come from the signed header), checks count and SHA-512, and returns the plaintext.
 * The plaintext buffer is sized from the file actually received, never from a claimed size.
 * @throws FedsslError ENVELOPE_* on any authentication, count or length problem.
 */
export function openEnvelopeFile(
  path: string,
  header: UpdateHeader,
  coordinatorBoxSecretKey: Uint8Array,
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
    const plain = new Uint8Array(header.plaintextBytes);
    let inOff = 0;
    let outOff = 0;
    for (let i = 0; i < header.chunkCount; i++) {
      const len = chunkCiphertextLength(header, i);
      const buf = new Uint8Array(len);
      readSync(fd, buf, 0, len, inOff);
      inOff += len;
      const piece = opener.openChunk(i, buf);
      plain.set(piece, outOff);
      outOff += piece.length;
    }
    opener.finish();
    return plain;
  } finally {
    opener.dispose();
    closeSync(fd);
  }
}

/**
 * Decodes an update's plaintext against the run's shared parameter specs and applies the
 * content checks: names/shapes (MODEL_WEIGHTS_MISMATCH), finiteness (UPDATE_NOT_FINITE),
 * L2 norm bound (UPDATE_NORM_TOO_LARGE).
 */
export function decodeDelta(plaintext: Uint8Array, model: ModelConfig, maxUpdateNorm: number): NamedTensors {
  const expect = sharedParamSpecs(model).map((s) => ({ name: s.name, shape: s.shape }));
  const { tensors } = decodeWeights(plaintext, expect);
  if (!allFinite(tensors))
    throw new FedsslError('UPDATE_NOT_FINITE', 'update contains NaN or infinite values');
  const norm = l2Norm(tensors);
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
