import { describe, it, expect, afterEach } from 'vitest';
import { isFedsslErrorLike } from '../admin/http/fedssl-exception.filter';
import { FederationFixture, testRunBody } from '../runs/federation.fixture';
import { OpsMetrics } from './ops-metrics';

/** The value of one sample line `name{labels} value` in the exposition text. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const flipLastByte = (i: number, c: Uint8Array): Uint8Array => {
  if (i !== 0) return c;
  const copy = c.slice();
  copy[copy.length - 1]! ^= 0x80;
  return copy;
};

describe('OpsMetrics over a real round engine and upload service', () => {
  let f: FederationFixture | undefined;
  let m: OpsMetrics | undefined;
  afterEach(async () => {
    m?.close();
    await f?.close();
  });

  it('counts bytes, accepted and rejected updates by code, the published round and its aggregation time', async () => {
    f = await FederationFixture.create();
    let online = 0;
    m = new OpsMetrics({
      onlineSites: () => online,
      engineEvents: f.engine.events,
      uploadEvents: f.uploads.events,
    });
    const a = f.agent('site-a', 10, 0.01);
    const b = f.agent('site-b', 10, 0.02);
    const [pa, pb] = [a.nextTask(), b.nextTask()];
    f.connect(a);
    f.connect(b);
    online = 2;
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 1 }));
    await f.runs.start(run.id);
    const [ta, tb] = await Promise.all([pa, pb]);

    // site-a's envelope is tampered with: refused at commit (authentication fails).
    const tampered = a.seal(ta);
    const bad = await f.upload('site-a', tampered, flipLastByte).then(
      () => 'accepted',
      (e: unknown) => (isFedsslErrorLike(e) ? e.code : String(e)),
    );
    expect(bad).toBe('ENVELOPE_CHUNK_INVALID');
    const good = b.seal(tb);
    await f.upload('site-b', good);
    await f.engine.idle();

    const text = (await m.scrape()).body;
    const sent = [...tampered.chunks, ...good.chunks].reduce((n, c) => n + c.byteLength, 0);
    expect(sample(text, 'fedssl_update_bytes_received_total')).toBe(sent);
    expect(sample(text, 'fedssl_updates_accepted_total')).toBe(1);
    expect(sample(text, `fedssl_updates_rejected_total{reason="${bad}"}`)).toBe(1);
    expect(sample(text, 'fedssl_rounds_total{state="published"}')).toBe(1);
    expect(sample(text, 'fedssl_rounds_total{state="failed"}')).toBe(0);
    expect(sample(text, 'fedssl_runs_finished_total{state="completed"}')).toBe(1);
    expect(sample(text, 'fedssl_aggregation_seconds_count{outcome="ok"}')).toBe(1);
    expect(sample(text, 'fedssl_aggregation_seconds_sum{outcome="ok"}')).toBeGreaterThan(0);
    expect(sample(text, 'fedssl_sites_online')).toBe(2);
    online = 1;
    expect(sample((await m.scrape()).body, 'fedssl_sites_online')).toBe(1);
  });

  it('stops counting after close()', async () => {
    f = await FederationFixture.create();
    // The upload service itself listens to round events (it drops uploads of closed rounds).
    const roundListeners = f.engine.events.listenerCount('round');
    m = new OpsMetrics({
      onlineSites: () => 0,
      engineEvents: f.engine.events,
      uploadEvents: f.uploads.events,
    });
    m.close();
    f.uploads.events.emit('refused', 'UPLOAD_UNKNOWN');
    expect((await m.scrape()).body).not.toContain('UPLOAD_UNKNOWN');
    expect(f.uploads.events.listenerCount('refused')).toBe(0);
    expect(f.engine.events.listenerCount('round')).toBe(roundListeners);
  });
});
