import { createCipheriv, createHash, randomFillSync } from 'node:crypto';

/** A source of random bytes: the OS CSPRNG in production, a seeded stream in tests. */
export interface ByteSource {
  fill(out: Uint8Array): void;
}

/** The operating system's CSPRNG (node:crypto `randomFillSync`). */
export const cryptoBytes: ByteSource = { fill: (out) => void randomFillSync(out) };

/**
 * A deterministic stream: ChaCha20 keystream under SHA-256(`fedssl-dp-seed` ‖ seed). For tests
 * and reproducible experiments only; it is as unpredictable as its seed is secret.
 */
export function seededBytes(seed: string | Uint8Array): ByteSource {
  const key = createHash('sha256').update('fedssl-dp-seed\n').update(seed).digest();
  const cipher = createCipheriv('chacha20', key, Buffer.alloc(16));
  return {
    fill(out) {
      const zeros = Buffer.alloc(out.length);
      Buffer.from(cipher.update(zeros)).copy(Buffer.from(out.buffer, out.byteOffset, out.byteLength));
    },
  };
}

const BLOCK = 8192; // uniforms drawn per refill (8 bytes each)

/**
 * Standard normal deviates by Box–Muller over 53-bit uniforms from a {@link ByteSource}.
 * Floating-point sampling leaks a little through the low bits of results (Mironov 2012);
 * docs/privacy.md lists it under limits.
 */
export class GaussianSampler {
  private readonly buf = new Uint8Array(BLOCK * 8);
  private readonly view = new DataView(this.buf.buffer);
  private pos = BLOCK;
  private spare: number | null = null;

  constructor(private readonly bytes: ByteSource = cryptoBytes) {}

  /** A uniform in (0, 1]. */
  private uniform(): number {
    if (this.pos === BLOCK) {
      this.bytes.fill(this.buf);
      this.pos = 0;
    }
    const hi = this.view.getUint32(this.pos * 8) >>> 5; // 27 bits
    const lo = this.view.getUint32(this.pos * 8 + 4) >>> 6; // 26 bits
    this.pos++;
    return (hi * 67108864 + lo + 1) / 9007199254740992; // (k + 1) / 2^53
  }

  /** One N(0, 1) deviate. */
  next(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}
