import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { NamedTensors } from '@fedssl/shared/codec';
import { generatePartyKeys, toBase64 } from '@fedssl/shared/crypto';
import type { ModelConfig, TrainingConfig } from '@fedssl/shared/model';
import type { Ack } from '@fedssl/shared/protocol';
import { FederationFixture } from '../../coordinator/src/runs/federation.fixture';
import { modelVersionOf } from '../../coordinator/src/runs/round-engine';
import type { RunDetail } from '../../coordinator/src/runs/run.types';
import type { StrategyConfigInput } from '../../coordinator/src/strategies/config';
import { readLedger } from '../../site-agent/src/audit/ledger';
import { decodeLocalState, encodeLocalState, trainRound } from '../../site-agent/src/train/trainer';
import { systemClock } from '../../site-agent/src/uplink/backoff';
import { fileLocalStateStore } from '../../site-agent/src/uplink/local-state-store';
import { TaskRunner, type TaskOutcome } from '../../site-agent/src/uplink/task-runner';
import {
  ackErrorToFedssl,
  asCodedError,
  type NotifyEvent,
  type NotifyPayload,
  type RequestEvent,
  type RequestPayload,
  type RequestResult,
  type Uplink,
} from '../../site-agent/src/uplink/uplink';
import type { SiteData } from './data';

/**
 * K hospitals in one process, through the production federation code: the coordinator's
 * RoundEngine, RunService, UploadService, ModelStoreService and strategies (wired by
 * {@link FederationFixture} over a real SQLite store and data dir, in-memory transport),
 * and on each site the agent's own {@link TaskRunner} — task signature check, signed model
 * download with hash check, `trainRound`, FedEMA, sealed (signed + encrypted) chunked
 * upload, upload ledger, local state on disk. Only the socket is replaced: an in-process
 * {@link Uplink} hands each request to the service the socket.io gateway would call.
 */

/** Hands agent requests to the coordinator services in-process (what AgentGateway does over socket.io). */
class InProcessUplink implements Uplink {
  constructor(
    private readonly f: FederationFixture,
    private readonly siteId: string,
  ) {}

  async request<E extends RequestEvent>(event: E, payload: RequestPayload<E>): Promise<RequestResult<E>> {
    try {
      return (await this.dispatch(event, payload)) as RequestResult<E>;
    } catch (e) {
      // The gateway turns thrown FedsslErrors into `{ok:false}` acks, which the agent reads back.
      const coded = asCodedError(e);
      if (coded) throw ackErrorToFedssl(event, coded);
      throw e;
    }
  }

  private async dispatch(event: RequestEvent, payload: unknown): Promise<unknown> {
    const p = payload as Record<string, unknown>;
    switch (event) {
      case 'model:manifest': {
        const m = this.f.models.getManifest(String(p.version));
        if (!m)
          throw ackErrorToFedssl(event, { code: 'MODEL_VERSION_NOT_FOUND', message: String(p.version) });
        return m;
      }
      case 'model:chunk':
        return { data: this.f.models.readChunk(String(p.version), Number(p.offset), Number(p.length)) };
      case 'update:begin':
        return this.f.uploads.begin(this.siteId, payload);
      case 'update:chunk':
        return this.f.uploads.chunk(this.siteId, payload);
      case 'update:commit':
        return this.f.uploads.commit(this.siteId, payload);
    }
  }

  notify<E extends NotifyEvent>(event: E, payload: NotifyPayload<E>): void {
    if (event === 'task:failed') {
      const f = payload as NotifyPayload<'task:failed'>;
      void this.f.engine.taskFailed(this.siteId, f.taskId, f.code, f.message);
    }
  }

  ready(): Promise<void> {
    return Promise.resolve();
  }
}

/** One site's answer in one round, as the coordinator recorded it. */
export interface SiteRound {
  siteId: string;
  state: string;
  exampleCount: number | null;
  loss: number;
  byolLoss: number;
  metadataLoss: number;
  steps: number;
  fedemaMu?: number;
}

export interface FederatedRunSpec {
  sites: SiteData[];
  model: ModelConfig;
  /** The run's training config (carried in every task). */
  training: TrainingConfig;
  rounds: number;
  /** Seeds the initial global model (RoundEngine publishes `initSharedWeights(model, seed)`). */
  seed: number;
  strategy?: StrategyConfigInput;
  /**
   * Optimizer steps of a site per round. The run config has one `maxStepsPerRound` for all
   * sites; to give every site the same fraction of a local epoch (steps ∝ its data, as
   * FedAvg's local epochs do) the simulator sets this per site before the agent's trainer runs.
   */
  stepsPerRound: (site: SiteData) => number;
  /** Working folder (SQLite, model store, agent homes); removed at the end. */
  logger?: Logger;
}

export interface FederatedRunResult {
  runId: string;
  /** Global model after the last round. */
  weights: NamedTensors;
  /** Global model after each round (index 0 = round 1). */
  roundWeights: NamedTensors[];
  /** Per round, every site's recorded answer (from the run store). */
  rounds: SiteRound[][];
  publishedRounds: number;
  acceptedUpdates: number;
  taskOffers: number;
  /** ‖w_global(round 1) − w_site(end of round 1)‖ per site (FedEMA's autoscaler uses it). */
  round1Divergence: number[];
  /**
   * Per published round, per site (in `sites` order), the bytes each agent's upload ledger
   * records: `upload` = the accepted update as sent (ciphertext chunks + signed header),
   * `download` = the global model it fetched for that round.
   */
  bytes: { upload: number[][]; download: number[][] };
  seconds: number;
}

function l2Distance(a: NamedTensors, b: NamedTensors): number {
  const byName = new Map(b.map((t) => [t.name, t.data]));
  let sq = 0;
  for (const t of a) {
    const o = byName.get(t.name)!;
    for (let i = 0; i < t.data.length; i++) sq += (t.data[i]! - o[i]!) ** 2;
  }
  return Math.sqrt(sq);
}

/**
 * Run one federated pretraining run to completion (every site in every round) and return
 * the published models and what the coordinator recorded.
 * @throws Error when the run fails or is cancelled (with the engine's reason).
 */
export async function simulateFederation(spec: FederatedRunSpec): Promise<FederatedRunResult> {
  const started = performance.now();
  const log = spec.logger ?? pino({ level: 'silent' });
  const f = await FederationFixture.create(log);
  const round1Local = new Map<string, NamedTensors>();
  const runners: TaskRunner[] = [];
  try {
    const failures: string[] = [];
    for (const site of spec.sites) {
      const keys = generatePartyKeys();
      f.sites.set(site.id, {
        id: site.id,
        name: site.name,
        signingPublicKey: toBase64(keys.signing.publicKey),
        status: 'enrolled',
        exampleCount: site.dataset.count,
      });
      const home = join(f.dataDir, 'agents', site.id);
      mkdirSync(join(home, 'state'), { recursive: true });
      const steps = spec.stepsPerRound(site);
      let calls = 0;
      const runner = new TaskRunner({
        uplink: new InProcessUplink(f, site.id),
        siteId: site.id,
        coordinator: {
          signingPublicKey: f.keys.keys.signing.publicKey,
          boxPublicKey: f.keys.keys.box.publicKey,
        },
        siteSigningSecretKey: keys.signing.secretKey,
        uploadChunkSize: 256 * 1024,
        home,
        dataset: () => Promise.resolve(site.dataset),
        train: async (args) => {
          const r = await trainRound({
            ...args,
            training: { ...args.training, localEpochs: Number.MAX_SAFE_INTEGER, maxStepsPerRound: steps },
          });
          if (++calls === 1) round1Local.set(site.id, r.weights);
          return r;
        },
        localStates: fileLocalStateStore(
          join(home, 'state'),
          { encode: encodeLocalState, decode: decodeLocalState },
          log,
        ),
        logger: log,
        // The agent reads the coordinator's (fake, frozen) time: task deadlines and the upload's
        // createdAt are checked against it; waits (retries) stay real.
        clock: { now: () => f.clock.now(), sleep: systemClock.sleep },
        onOutcome: (o: TaskOutcome) => {
          if (o.status !== 'accepted')
            failures.push(`${site.id} round ${o.round}: ${o.status} ${o.error?.message}`);
        },
      });
      runners.push(runner);
      f.transport.connect(site.id, {
        onTask: (signed) =>
          new Promise((resolve) =>
            runner.handleOffer(signed, (ack: Ack) =>
              resolve(ack.ok ? { accepted: true } : { accepted: false, reason: ack.error.message }),
            ),
          ),
        onCancel: (taskId, reason) => runner.handleCancel({ taskId, reason }),
      });
    }

    const run = await f.runs.create({
      name: 'simulation',
      rounds: spec.rounds,
      minSites: spec.sites.length,
      roundDeadlineSeconds: 7 * 24 * 3600,
      strategy: spec.strategy ?? 'fedavg',
      model: spec.model,
      training: spec.training,
      seed: spec.seed,
    });
    const ended = new Promise<string>((resolve) =>
      f.engine.events.on('run', (e) => {
        if (e.runId === run.id && ['completed', 'failed', 'cancelled'].includes(e.state)) resolve(e.state);
      }),
    );
    // The sites are connected before the start, so round 1 selects them all at once.
    await f.runs.start(run.id);
    const state = await ended;
    await f.engine.idle();
    for (const r of runners) await r.idle();
    const detail: RunDetail = await f.runs.get(run.id);
    if (state !== 'completed') {
      throw new Error(
        `federated run ${state}: ${detail.reason ?? ''} ${detail.rounds.map((r) => r.reason).join('; ')} ${failures.join('; ')}`,
      );
    }

    const published = detail.rounds.filter((r) => r.state === 'published').sort((a, b) => a.round - b.round);
    const roundWeights = published.map((r) => f.models.readWeights(r.modelVersion!));
    const rounds = published.map((r) =>
      r.participants.map((p) => ({
        siteId: p.siteId,
        state: p.state,
        exampleCount: p.exampleCount,
        loss: p.metrics?.loss ?? NaN,
        byolLoss: p.metrics?.byolLoss ?? NaN,
        metadataLoss: p.metrics?.metadataLoss ?? NaN,
        steps: p.metrics?.steps ?? 0,
        ...(p.metrics?.fedemaMu !== undefined ? { fedemaMu: p.metrics.fedemaMu } : {}),
      })),
    );
    const ledgers = await Promise.all(spec.sites.map((s) => readLedger(join(f.dataDir, 'agents', s.id))));
    const bytesOf = (kind: 'upload' | 'download', round: number) =>
      ledgers.map((entries) =>
        entries.reduce(
          (n, e) =>
            e.round !== round
              ? n
              : e.kind === 'upload' && kind === 'upload' && e.accepted
                ? n + e.bytesSent
                : e.kind === 'download' && kind === 'download'
                  ? n + e.bytes
                  : n,
          0,
        ),
      );
    const r1 = f.models.readWeights(modelVersionOf(run.id, 1));
    return {
      runId: run.id,
      weights: f.models.readWeights(modelVersionOf(run.id, spec.rounds)),
      roundWeights,
      rounds,
      publishedRounds: published.length,
      acceptedUpdates: rounds.flat().filter((p) => p.state === 'accepted').length,
      taskOffers: f.transport.offers.length,
      round1Divergence: spec.sites.map((s) => l2Distance(r1, round1Local.get(s.id)!)),
      bytes: {
        upload: published.map((r) => bytesOf('upload', r.round)),
        download: published.map((r) => bytesOf('download', r.round)),
      },
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    for (const r of runners) await r.stop('simulation over');
    await f.close();
  }
}
