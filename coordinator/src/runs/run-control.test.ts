import { describe, it, expect, afterEach } from 'vitest';
import { Writable } from 'node:stream';
import pino from 'pino';
import { FederationFixture, testRunBody } from './federation.fixture';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

const skips = (lines: Record<string, unknown>[]) =>
  lines.filter((l) => l['msg'] === 'site not selected').map((l) => [l['runId'], l['siteId'], l['reason']]);

describe('run control: several runs, data minimum, pause/resume/cancel', () => {
  let f: FederationFixture;
  afterEach(async () => f?.close());

  it('never offers one site tasks of two runs at once: the second run waits, then gets the site', async () => {
    const log = capture();
    f = await FederationFixture.create(log.logger);
    const a = f.agent('site-a', 10, 0.01);
    f.connect(a);
    await f.engine.idle();
    const first = await f.runs.create(testRunBody({ rounds: 1, minSites: 1 }));
    const second = await f.runs.create(testRunBody({ rounds: 1, minSites: 1 }));
    await f.runs.start(first.id);
    await f.runs.start(second.id);
    expect(a.tasks.map((t) => t.runId)).toEqual([first.id]);
    expect(skips(log.lines)).toEqual([[second.id, 'site-a', `busy with a task of run ${first.id}`]]);
    expect((await f.runs.get(second.id)).rounds).toMatchObject([{ round: 1, state: 'open' }]);

    await f.upload('site-a', a.seal(a.tasks[0]!));
    await f.engine.idle();
    expect((await f.runs.get(first.id)).state).toBe('completed');
    expect(a.tasks.map((t) => t.runId)).toEqual([first.id, second.id]);
    expect((await f.runs.get(second.id)).rounds).toMatchObject([{ round: 1, state: 'training' }]);
  });

  it("selects only sites whose last reported example count meets the run's minExamples, logging why", async () => {
    const log = capture();
    f = await FederationFixture.create(log.logger);
    const small = f.agent('site-a', 5, 0.01);
    const big = f.agent('site-b', 100, 0.01);
    const silent = f.agent('site-c', 100, 0.01);
    f.sites.set('site-a', { ...small.site(), exampleCount: 5 });
    f.sites.set('site-b', { ...big.site(), exampleCount: 100 });
    for (const x of [small, big, silent]) f.connect(x);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 1, minSites: 1, minExamples: 50 }));
    await f.runs.start(run.id);
    expect([small, big, silent].map((x) => x.tasks.length)).toEqual([0, 1, 0]);
    expect(skips(log.lines)).toEqual([
      [run.id, 'site-a', '5 examples; run needs 50'],
      [run.id, 'site-c', 'no example count reported; run needs 50'],
    ]);
  });

  it('pause lets the training round finish but opens no next round until resume; cancel stops the agents', async () => {
    f = await FederationFixture.create();
    const a = f.agent('site-a', 10, 0.01);
    f.connect(a);
    await f.engine.idle();
    const run = await f.runs.create(testRunBody({ rounds: 3, minSites: 1 }));
    await f.runs.start(run.id);
    expect((await f.runs.pause(run.id)).state).toBe('paused');
    await f.upload('site-a', a.seal(a.tasks[0]!));
    await f.engine.idle();
    let detail = await f.runs.get(run.id);
    expect([detail.state, detail.rounds.map((r) => [r.round, r.state])]).toEqual([
      'paused',
      [[1, 'published']],
    ]);
    expect(a.tasks).toHaveLength(1);

    // A restart keeps it paused: resumeAll only resumes running runs.
    await f.restart();
    await f.engine.resumeAll();
    expect((await f.runs.get(run.id)).state).toBe('paused');
    f.connect(a);
    await f.engine.idle();

    expect((await f.runs.resume(run.id)).state).toBe('running');
    await f.engine.idle();
    detail = await f.runs.get(run.id);
    expect(detail.rounds.map((r) => [r.round, r.state])).toEqual([
      [1, 'published'],
      [2, 'training'],
    ]);
    const task2 = a.tasks.at(-1)!;
    expect(task2.round).toBe(2);

    expect((await f.runs.cancel(run.id)).state).toBe('cancelled');
    expect(f.transport.cancels).toEqual([
      { siteId: 'site-a', taskId: task2.taskId, reason: 'run cancelled' },
    ]);
    detail = await f.runs.get(run.id);
    expect(detail.rounds.at(-1)).toMatchObject({ round: 2, state: 'failed', reason: 'run cancelled' });
    expect(detail.rounds.at(-1)!.participants).toMatchObject([
      { siteId: 'site-a', state: 'dropped', reason: 'run cancelled' },
    ]);
    // An update for the cancelled run's task is refused and changes nothing.
    await expect(f.upload('site-a', a.seal(task2))).rejects.toThrow(/already answered/);
    expect((await f.audit.list({ limit: 100 })).map((e) => e.action)).toEqual([
      'run.created',
      'run.started',
      'run.paused',
      'update.accepted',
      'round.published',
      'run.resumed',
      'run.cancelled',
    ]);
    expect(await f.audit.verify()).toEqual({ ok: true, entries: 7 });
  });
});
