import type { Logger } from 'pino';
import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import type { SecAggAnswer, SecAggStep } from '@fedssl/shared/protocol';
import type { ModelConfig } from '@fedssl/shared/model';
import {
  decodeMaskedInput,
  DEFAULT_FRACTION_BITS,
  isRingVector,
  minimumThreshold,
  SecAggServer,
  type SecAggParams,
} from '@fedssl/shared/secagg';
import { updateDimension } from './privacy-policy';

/**
 * The masked vector of a secure-aggregation update's plaintext.
 * @throws FedsslError CODEC_MALFORMED (wrong format or length), UPDATE_TENSORS_INVALID (values
 *   outside the ring).
 */
export function readMaskedUpdate(plain: Uint8Array, model: ModelConfig): Float64Array {
  const y = decodeMaskedInput(plain, updateDimension(model));
  if (!isRingVector(y))
    throw new FedsslError('UPDATE_TENSORS_INVALID', 'masked update holds values outside the ring');
  return y;
}

/** How the driver reaches the round's sites (the transport implements it; tests use memory). */
export interface SecAggPeers {
  /** Sends one step to a site and resolves with its answer; rejects on refusal, loss or timeout. */
  step(siteId: string, msg: SecAggStep): Promise<SecAggAnswer>;
}

export interface SecAggSite {
  siteId: string;
  taskId: string;
}

/**
 * The coordinator's side of one round's secure aggregation over {@link SecAggPeers}: it asks the
 * round's sites for keys, relays the roster and the share boxes ({@link setup}, while they
 * train), then, once their masked updates are in, asks the survivors for unmasking shares and
 * returns only the sum ({@link unmaskSum}). A site that fails or does not answer a step is left
 * out of the rest of the session; the protocol tolerates it down to the threshold.
 * State is in memory: a coordinator restart in the middle fails the round (it is retried).
 */
export class SecAggDriver {
  private readonly server: SecAggServer;
  readonly params: Required<SecAggParams>;
  private readonly tasks: Map<string, string>;
  private masking: Set<string> = new Set();

  constructor(
    private readonly peers: SecAggPeers,
    sessionId: string,
    dimension: number,
    sites: readonly SecAggSite[],
    private readonly log: Logger,
  ) {
    this.params = {
      sessionId,
      threshold: minimumThreshold(sites.length),
      dimension,
      fractionBits: DEFAULT_FRACTION_BITS,
    };
    this.server = new SecAggServer(this.params);
    this.tasks = new Map(sites.map((s) => [s.siteId, s.taskId]));
  }

  /** Sends `make(siteId)` to each site at once; returns the answers of those that answered. */
  private async round<T extends SecAggAnswer['step']>(
    siteIds: readonly string[],
    step: T,
    make: (siteId: string, taskId: string) => SecAggStep,
  ): Promise<Map<string, Extract<SecAggAnswer, { step: T }>>> {
    const settled = await Promise.allSettled(
      siteIds.map((id) => this.peers.step(id, make(id, this.tasks.get(id)!))),
    );
    const out = new Map<string, Extract<SecAggAnswer, { step: T }>>();
    settled.forEach((r, i) => {
      const siteId = siteIds[i]!;
      if (r.status === 'fulfilled' && r.value.step === step)
        out.set(siteId, r.value as Extract<SecAggAnswer, { step: T }>);
      else
        this.log.warn(
          {
            siteId,
            step,
            err: r.status === 'rejected' ? (r.reason as Error).message : 'answer to another step',
          },
          'secure aggregation: site left out',
        );
    });
    return out;
  }

  /**
   * Steps 0 and 1 (advertise keys, share keys) and the delivery of share boxes. Resolves with
   * the sites that may upload a masked update (U2).
   * @throws FedsslError SECAGG_TOO_FEW_PARTIES / SECAGG_PROTOCOL when fewer than t sites remain.
   */
  async setup(): Promise<string[]> {
    const { sessionId, threshold, dimension, fractionBits } = this.params;
    const all = [...this.tasks.keys()].sort();
    const keys = await this.round(all, 'advertise', (_, taskId) => ({
      taskId,
      step: 'advertise',
      sessionId,
      threshold,
      dimension,
      fractionBits,
    }));
    for (const [siteId, a] of keys) {
      if (a.keys.party !== siteId) continue; // a site may only speak for itself
      this.server.receiveAdvertise(a.keys);
    }
    const roster = this.server.closeAdvertise();
    const shared = await this.round(
      roster.map((r) => r.party),
      'share',
      (_, taskId) => ({ taskId, step: 'share', roster }),
    );
    for (const [siteId, s] of shared) {
      try {
        if (s.shares.party !== siteId)
          throw new FedsslError('SECAGG_PROTOCOL', 'shares signed for another party');
        this.server.receiveShares(s.shares);
      } catch (e) {
        this.log.warn({ siteId, err: (e as Error).message }, 'secure aggregation: shares refused');
      }
    }
    const boxes = this.server.closeShares();
    const delivered = await this.round([...boxes.keys()], 'boxes', (siteId, taskId) => ({
      taskId,
      step: 'boxes',
      boxes: boxes.get(siteId)!,
    }));
    // A site that did not get its boxes cannot mask; it stays in U2 (its shares are out) and
    // is recovered like a dropout if it never uploads.
    this.masking = new Set(delivered.keys());
    this.log.info(
      { sessionId, sites: all.length, roster: roster.length, sharing: boxes.size, threshold },
      'secure aggregation set up',
    );
    return [...this.masking].sort();
  }

  /**
   * Step 3 after the masked updates are in: `masked` holds each accepted site's masked vector.
   * Returns Σ of their inputs and the sites it covers.
   * @throws FedsslError SECAGG_TOO_FEW_PARTIES, SECAGG_RECONSTRUCTION_FAILED.
   */
  async unmaskSum(
    masked: ReadonlyMap<string, Float64Array>,
  ): Promise<{ sum: Float64Array; sites: string[] }> {
    for (const [siteId, y] of masked) {
      if (!this.masking.has(siteId))
        throw new FedsslError('SECAGG_PROTOCOL', `${siteId} uploaded without taking part`);
      this.server.receiveMasked({ party: siteId, masked: y });
    }
    const survivors = this.server.closeMasked();
    const answers = await this.round(survivors, 'unmask', (_, taskId) => ({
      taskId,
      step: 'unmask',
      survivors,
    }));
    for (const [siteId, a] of answers) {
      if (a.unmask.party === siteId) this.server.receiveUnmask(a.unmask);
    }
    const sum = await this.server.finish();
    this.log.info(
      { sessionId: this.params.sessionId, survivors: survivors.length, answers: answers.size },
      'secure sum unmasked',
    );
    return { sum, sites: survivors };
  }
}

/**
 * FedAvg from a secure sum: the sites input wᵢ·Δᵢ (wᵢ = example count), so the new global
 * model is global + Σ wᵢΔᵢ / Σ wᵢ over the sites in the sum. The coordinator never sees a Δᵢ.
 */
export function secureFedAvg(global: NamedTensors, sum: Float64Array, totalWeight: number): NamedTensors {
  if (!(totalWeight > 0))
    throw new FedsslError('UPDATE_EXAMPLE_COUNT_INVALID', 'secure sum with no examples');
  let off = 0;
  const out = global.map((g) => {
    const data = new Float32Array(g.data.length);
    for (let i = 0; i < data.length; i++) data[i] = g.data[i]! + sum[off + i]! / totalWeight;
    off += data.length;
    return { name: g.name, shape: g.shape.slice(), data };
  });
  if (off !== sum.length)
    throw new FedsslError('UPDATE_TENSORS_INVALID', `secure sum has ${sum.length} values; model has ${off}`);
  return out;
}
