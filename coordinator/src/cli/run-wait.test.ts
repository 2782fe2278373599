import { describe, it, expect } from 'vitest';
import { AdminClient } from './admin-client';
import { CliError } from './io';
import { formatPublishedRound, waitForRun } from './run-wait';

const participant = (siteId: string, loss: number, exampleCount: number) => ({
  siteId,
  siteName: siteId.toUpperCase(),
  state: 'accepted',
  exampleCount,
  metrics: { loss, steps: 3 },
});
const round = (
  n: number,
  state: string,
  parts = [participant('a', 1.5, 10), participant('b', 0.25, 30)],
) => ({
  round: n,
  attempt: 1,
  state,
  modelVersion: state === 'published' ? `run-1.r${n}` : null,
  participants: parts,
});

/** A fetch that serves the given `GET /runs/run-1` bodies in order and fails on anything else. */
function scriptedFetch(bodies: unknown[]): { fetch: typeof fetch; calls: string[] } {
  const calls: string[] = [];
  const f = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    calls.push(`${init?.method ?? 'GET'} ${url}`);
    if (url !== 'http://coord/api/v1/runs/run-1' || (init?.method ?? 'GET') !== 'GET')
      throw new Error(`unexpected call ${url}`);
    const body = bodies.shift();
    if (body === undefined) throw new Error('no more scripted responses');
    return new Response(JSON.stringify(body), {
      status: 200,
      headers: { 'content-type': 'application/json' },
    });
  }) as typeof fetch;
  return { fetch: f, calls };
}

function io() {
  const o = {
    out: '',
    err: '',
    stdout: (t: string) => void (o.out += t),
    stderr: (t: string) => void (o.err += t),
  };
  return o;
}

describe('waitForRun', () => {
  it('prints each newly published round once and exits 0 on completion', async () => {
    const { fetch, calls } = scriptedFetch([
      { id: 'run-1', state: 'running', rounds: [round(1, 'training')] },
      { id: 'run-1', state: 'running', rounds: [round(1, 'published'), round(2, 'training')] },
      { id: 'run-1', state: 'running', rounds: [round(1, 'published'), round(2, 'training')] },
      { id: 'run-1', state: 'completed', rounds: [round(1, 'published'), round(2, 'published')] },
    ]);
    const out = io();
    const sleeps: number[] = [];
    const code = await waitForRun(new AdminClient({ url: 'http://coord', fetch }), out, {
      runId: 'run-1',
      json: false,
      sleep: async (ms) => void sleeps.push(ms),
    });
    expect(code).toBe(0);
    expect(out.out).toBe(
      'round 1 published run-1.r1: A loss=1.5000 examples=10, B loss=0.2500 examples=30\n' +
        'round 2 published run-1.r2: A loss=1.5000 examples=10, B loss=0.2500 examples=30\n' +
        'run run-1 completed\n',
    );
    expect(sleeps).toEqual([1000, 1000, 1000]);
    expect(calls).toHaveLength(4);
  });

  it('exits 1 when the run fails, with the reason on stderr', async () => {
    const { fetch } = scriptedFetch([
      { id: 'run-1', state: 'failed', reason: 'round 1 failed 3 times', rounds: [] },
    ]);
    const out = io();
    const code = await waitForRun(new AdminClient({ url: 'http://coord', fetch }), out, {
      runId: 'run-1',
      json: false,
      sleep: async () => {},
    });
    expect(code).toBe(1);
    expect(out.err).toBe('error: RUN_FAILED: run run-1 failed: round 1 failed 3 times\n');
  });

  it('times out using the injected clock', async () => {
    const { fetch } = scriptedFetch([
      { id: 'run-1', state: 'running', rounds: [] },
      { id: 'run-1', state: 'running', rounds: [] },
      { id: 'run-1', state: 'running', rounds: [] },
    ]);
    let t = 0;
    const promise = waitForRun(new AdminClient({ url: 'http://coord', fetch }), io(), {
      runId: 'run-1',
      json: false,
      timeoutSeconds: 2,
      now: () => t,
      sleep: async (ms) => void (t += ms),
    });
    await expect(promise).rejects.toThrow(new CliError('TIMEOUT', 'run run-1 is still running after 2s'));
  });

  it("reads a newer coordinator's answer with added fields, and --json keeps the round as sent", async () => {
    const added = { addedInNextRelease: { x: 1 } };
    const { fetch } = scriptedFetch([
      { id: 'run-1', state: 'completed', ...added, rounds: [{ ...round(1, 'published'), ...added }] },
    ]);
    const out = io();
    const code = await waitForRun(new AdminClient({ url: 'http://coord', fetch }), out, {
      runId: 'run-1',
      json: true,
      sleep: async () => {},
    });
    expect(code).toBe(0);
    expect(JSON.parse(out.out.split('\n')[0]!)).toEqual({
      event: 'round-published',
      runId: 'run-1',
      ...round(1, 'published'),
      ...added,
    });
  });

  it('refuses an answer without the rounds it reads, naming the field', async () => {
    const { fetch } = scriptedFetch([{ id: 'run-1', state: 'running' }]);
    await expect(
      waitForRun(new AdminClient({ url: 'http://coord', fetch }), io(), { runId: 'run-1', json: false }),
    ).rejects.toThrow(
      new CliError(
        'PROTOCOL_INVALID_MESSAGE',
        'unexpected answer to GET /runs/run-1 from http://coord: rounds: Invalid input: expected array, received undefined (is the coordinator a fedssl coordinator of a compatible release?)',
      ),
    );
  });

  it('only counts accepted participants', () => {
    const r = round(3, 'published', [
      participant('a', 1, 5),
      { ...participant('b', 2, 6), state: 'dropped' },
    ]);
    expect(formatPublishedRound(r)).toBe('round 3 published run-1.r3: A loss=1.0000 examples=5');
  });
});
