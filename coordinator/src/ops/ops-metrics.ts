import type { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { RATE_LIMIT_CLASSES, type RateLimitEvents } from '../ratelimit/rate-limit.service';
import type { RoundEngineEvents } from '../runs/round-engine';
import type { UploadEvents } from '../uploads/upload.service';

/** What the metrics read: the online-site count and the event sources. */
export interface OpsMetricsSources {
  onlineSites(): number;
  engineEvents: EventEmitter<RoundEngineEvents>;
  uploadEvents: EventEmitter<UploadEvents>;
  /** Absent: no rate-limit counter is fed (it still reads zero). */
  rateLimitEvents?: EventEmitter<RateLimitEvents>;
}

/**
 * The coordinator's Prometheus metrics on a registry of their own (not prom-client's
 * global one, so several coordinators in one process — tests — do not collide). Labels are
 * bounded: round states and error codes only, never site or run ids.
 */
export class OpsMetrics {
  readonly registry = new Registry();
  private readonly detach: Array<() => void> = [];

  constructor(src: OpsMetricsSources) {
    collectDefaultMetrics({ register: this.registry, prefix: 'fedssl_' });
    const registers = [this.registry];
    new Gauge({
      name: 'fedssl_sites_online',
      help: 'Sites with at least one authenticated agent connection.',
      registers,
      collect() {
        this.set(src.onlineSites());
      },
    });
    const rounds = new Counter({
      name: 'fedssl_rounds_total',
      help: 'Round attempts that reached a final state, by state (published | failed).',
      labelNames: ['state'] as const,
      registers,
    });
    const runs = new Counter({
      name: 'fedssl_runs_finished_total',
      help: 'Runs that reached a final state, by state (completed | cancelled | failed).',
      labelNames: ['state'] as const,
      registers,
    });
    const aggregation = new Histogram({
      name: 'fedssl_aggregation_seconds',
      help: 'Wall time to aggregate a round and publish its model, by outcome (ok | failed).',
      labelNames: ['outcome'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    const bytes = new Counter({
      name: 'fedssl_update_bytes_received_total',
      help: 'Update envelope ciphertext bytes received (chunks appended).',
      registers,
    });
    const accepted = new Counter({
      name: 'fedssl_updates_accepted_total',
      help: 'Updates verified and accepted.',
      registers,
    });
    const rejected = new Counter({
      name: 'fedssl_updates_rejected_total',
      help: 'Update steps refused, by error code.',
      labelNames: ['reason'] as const,
      registers,
    });
    const limited = new Counter({
      name: 'fedssl_rate_limited_total',
      help: 'Attempts refused by a per-address rate limit, by class (enroll | admin-auth | agent-connect).',
      labelNames: ['limit'] as const,
      registers,
    });
    // Zero series up front so dashboards and rate() see them before the first event.
    for (const s of ['published', 'failed']) rounds.labels(s).inc(0);
    accepted.inc(0);
    for (const l of RATE_LIMIT_CLASSES) limited.labels(l).inc(0);

    const onRound = (ev: RoundEngineEvents['round'][0]): void => {
      if (ev.state === 'published' || ev.state === 'failed') rounds.labels(ev.state).inc();
    };
    const onRun = (ev: RoundEngineEvents['run'][0]): void => {
      if (ev.state === 'completed' || ev.state === 'cancelled' || ev.state === 'failed')
        runs.labels(ev.state).inc();
    };
    const onAggregation = (ev: RoundEngineEvents['aggregation'][0]): void =>
      aggregation.labels(ev.ok ? 'ok' : 'failed').observe(ev.seconds);
    const onBytes = (n: number): void => bytes.inc(n);
    const onAccepted = (): void => accepted.inc();
    const onRefused = (code: string): void => rejected.labels(code).inc();
    const { engineEvents: engine, uploadEvents: uploads } = src;
    engine.on('round', onRound).on('run', onRun).on('aggregation', onAggregation);
    uploads.on('bytes', onBytes).on('accepted', onAccepted).on('refused', onRefused);
    const onLimited = (cls: string): void => limited.labels(cls).inc();
    src.rateLimitEvents?.on('limited', onLimited);
    this.detach.push(() => {
      engine.off('round', onRound).off('run', onRun).off('aggregation', onAggregation);
      uploads.off('bytes', onBytes).off('accepted', onAccepted).off('refused', onRefused);
      src.rateLimitEvents?.off('limited', onLimited);
    });
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** Unsubscribes from the event sources. */
  close(): void {
    for (const d of this.detach.splice(0)) d();
  }
}
