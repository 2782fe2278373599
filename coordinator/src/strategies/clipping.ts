import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import type { AggregationInput, AggregationOutput, Strategy, UpdateSource } from './strategy';

/** `delta` scaled by min(1, C / ‖delta‖₂) (norm in float64); returned as is when within C. */
export function clipToNorm(delta: NamedTensors, clipNorm: number): NamedTensors {
  let sq = 0;
  for (const t of delta) for (let i = 0; i < t.data.length; i++) sq += t.data[i]! * t.data[i]!;
  const norm = Math.sqrt(sq);
  if (norm <= clipNorm) return delta;
  const factor = clipNorm / norm;
  return delta.map((t) => {
    const data = new Float32Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = t.data[i]! * factor;
    return { name: t.name, shape: t.shape.slice(), data };
  });
}

/**
 * Update-norm clipping as a wrapper (Flower's `DifferentialPrivacyServerSideFixedClipping`
 * without the noise): each delta is clipped to L2 norm C as it is read, before the inner
 * strategy folds it. Bounds the influence of any single site.
 */
export class ClippingStrategy implements Strategy {
  readonly name: string;
  readonly stateful: boolean;

  constructor(
    private readonly inner: Strategy,
    private readonly clipNorm: number,
  ) {
    if (!(clipNorm > 0 && Number.isFinite(clipNorm))) {
      throw new FedsslError('RUN_CONFIG_INVALID', `clipNorm must be a positive number, got ${clipNorm}`);
    }
    this.name = `${inner.name}+clip`;
    this.stateful = inner.stateful;
  }

  aggregate(input: AggregationInput): AggregationOutput {
    const C = this.clipNorm;
    const updates: UpdateSource[] = input.updates.map((u) => ({
      siteId: u.siteId,
      exampleCount: u.exampleCount,
      readDelta: () => clipToNorm(u.readDelta(), C),
      release: () => u.release?.(),
    }));
    return this.inner.aggregate({ ...input, updates });
  }
}
