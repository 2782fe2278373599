import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Ack, Task } from '@fedssl/shared/protocol';
import type { ParticipantState } from '../../coordinator/src/runs/run.types';
import { PresenceService } from '../../coordinator/src/sites/presence.service';
import {
  HONEST,
  HostileCoordinator,
  expectRefused,
  filesUnder,
  type AgentClient,
  type Refusal,
} from './harness';

/** What a hostile case may use: the coordinator, the round in progress, the attacker and the honest sites. */
export interface CaseContext {
  h: HostileCoordinator;
  runId: string;
  /** The attacker: an enrolled site, connected and authenticated, holding its own task. */
  m: AgentClient;
  mTask: Task;
  honest: AgentClient[];
  honestTasks: Task[];
}

/** One row of a hostile table. */
export interface HostileCase {
  name: string;
  /** The coded error the sender of the hostile input gets. */
  code: string;
  /** `msg` of the coordinator log line that names the reason (it carries `code`). */
  log: string;
  /**
   * The attacker's own task afterwards: `rejected` once its own authentic envelope failed a
   * check (final, so it cannot be replayed), `offered` when the input never proved to be it,
   * `dropped` when the site was revoked.
   */
  attackerTask?: ParticipantState;
  act(ctx: CaseContext): Promise<Ack | Refusal | undefined>;
}

/**
 * Drives a hostile table against one real coordinator. Cases are played in rounds: each
 * round is a fresh one-round run over two honest sites and one freshly enrolled attacker per
 * case. Every case asserts the four points of issue #5 (see {@link run}); the round then
 * completes with the honest uploads and its published aggregate must be bit-identical to a
 * control round that never saw any hostile input ({@link finishRound}).
 */
export class HostileSuite {
  honest: AgentClient[] = [];
  /** SHA-256 of round 1's weights with only the honest updates (the control run). */
  controlSha = '';

  private constructor(readonly h: HostileCoordinator) {}

  static async start(): Promise<HostileSuite> {
    const s = new HostileSuite(await HostileCoordinator.start());
    for (const spec of HONEST)
      s.honest.push(await s.h.connect(await s.h.enroll(spec.name, spec.examples, spec.delta)));
    // Control: the same run with no hostile input.
    const { runId, tasks } = await s.h.startRound(s.honest);
    const published = s.h.published(runId);
    for (const [i, c] of s.honest.entries()) {
      c.replayable = c.agent.seal(tasks[i]!);
      expect(await c.upload(c.replayable)).toMatchObject({ ok: true, accepted: true });
    }
    await published;
    const r0 = await s.h.api('GET', `/models/${runId}.r0`);
    const r1 = await s.h.api('GET', `/models/${runId}.r1`);
    s.controlSha = r1.manifest.weightsSha256 as string;
    // Sanity of the control itself: r1 − r0 is the example-weighted mean of the honest deltas.
    const { decodeWeights } = await import('@fedssl/shared/codec');
    const weights = async (v: string) =>
      decodeWeights(
        new Uint8Array(
          await (
            await fetch(`${s.h.url}/api/v1/models/${v}/weights`, {
              headers: { authorization: `Bearer ${s.h.adminToken}` },
            })
          ).arrayBuffer(),
        ),
      ).tensors;
    const [w0, w1] = [await weights(`${runId}.r0`), await weights(`${runId}.r1`)];
    const mean =
      HONEST.reduce((a, x) => a + x.examples * x.delta, 0) / HONEST.reduce((a, x) => a + x.examples, 0);
    expect(w1[0]!.data[0]! - w0[0]!.data[0]!).toBeCloseTo(mean, 5);
    expect(r0.manifest.weightsSha256).not.toBe(s.controlSha);
    return s;
  }

  /** Waits until none of `siteIds` counts as online (their sockets are gone server-side). */
  private async offline(siteIds: string[]): Promise<void> {
    const presence = this.h.c.app.get(PresenceService);
    const still = () => siteIds.filter((id) => presence.isOnline(id));
    while (still().length > 0)
      await new Promise<void>((resolve) => {
        const on = () => {
          presence.off('offline', on);
          resolve();
        };
        presence.on('offline', on);
        if (still().length === 0) on();
      });
  }

  private round?: {
    runId: string;
    honestTasks: Task[];
    attackers: { m: AgentClient; mTask: Task }[];
    next: number;
  };

  /**
   * Starts a one-round run over the honest sites and `attackers` freshly enrolled attacker
   * sites (one per case that {@link run} will play in this round).
   */
  async openRound(attackers: number): Promise<void> {
    const { h } = this;
    const ms: AgentClient[] = [];
    for (let i = 0; i < attackers; i++) ms.push(await h.connect(await h.enroll('Mallory', 20, 7)));
    const { runId, tasks } = await h.startRound([...this.honest, ...ms]);
    this.round = {
      runId,
      honestTasks: tasks.slice(0, this.honest.length),
      attackers: ms.map((m, i) => ({ m, mTask: tasks[this.honest.length + i]! })),
      next: 0,
    };
  }

  /**
   * Plays one case with the round's next attacker: (1) the sender's coded error, (2) a log
   * line with that code, (3) nothing stored changed (rounds, honest tasks, accepted updates,
   * models) and the attacker's own task where the policy puts it, (4) the coordinator still
   * answers the honest sites. The attacker's task is then closed so the round can finish.
   */
  async run(c: HostileCase): Promise<void> {
    const { h } = this;
    const r = this.round!;
    const { m, mTask } = r.attackers[r.next++]!;
    const honestIds = this.honest.map((x) => x.siteId);
    const before = await h.snapshot(r.runId, honestIds);
    const mark = h.logs.mark();
    try {
      const got = await c.act({
        h,
        runId: r.runId,
        m,
        mTask,
        honest: this.honest,
        honestTasks: r.honestTasks,
      });
      expectRefused(got, c.code);
      await h.engine.idle();
      const lines = h.coded(mark, c.code);
      expect(
        lines.map((l) => l.msg),
        `log lines with ${c.code}: ${JSON.stringify(h.logs.since(mark).slice(-8))}`,
      ).toContain(c.log);
      expect(await h.snapshot(r.runId, honestIds)).toEqual(before);
      expect((await h.repo.getTask(mTask.taskId))!.state).toBe(c.attackerTask ?? 'offered');
      for (const x of this.honest) {
        expect(x.socket.connected).toBe(true);
        const manifest = await x.emit('model:manifest', { version: `${r.runId}.r0` });
        expect(manifest.ok).toBe(true);
      }
    } finally {
      // Whatever happened, the attacker's task is answered so that the round can complete.
      if ((await h.repo.getTask(mTask.taskId))?.state === 'offered') {
        const closer = m.socket.connected ? m : await h.connect(m.agent);
        await closer.emit('task:failed', { taskId: mTask.taskId, code: 'GAVE_UP', message: 'case over' });
      }
      const keep = [...this.honest, ...r.attackers.slice(r.next).map((a) => a.m)];
      await this.offline(h.closeAllBut(keep).filter((id) => !keep.some((k) => k.siteId === id)));
    }
  }

  /**
   * Point (4) for the whole round: the honest sites upload, the round publishes, and its
   * weights are bit-identical to the control round's (only the honest updates aggregated);
   * no unfinished upload survives the round.
   */
  async finishRound(): Promise<void> {
    const { h } = this;
    const r = this.round!;
    this.round = undefined;
    const honestIds = this.honest.map((x) => x.siteId);
    try {
      const published = h.published(r.runId);
      for (const [i, x] of this.honest.entries())
        expect(await x.upload(x.agent.seal(r.honestTasks[i]!))).toMatchObject({ ok: true, accepted: true });
      await published;
      const r1 = await h.api('GET', `/models/${r.runId}.r1`);
      expect(r1.manifest.weightsSha256).toBe(this.controlSha);
      expect(r1.manifest.sites.map((s: { siteId: string }) => s.siteId).sort()).toEqual(
        [...honestIds].sort(),
      );
      expect((await h.repo.listUpdates(r.runId, 1, 1)).map((u) => u.siteId).sort()).toEqual(
        [...honestIds].sort(),
      );
      await h.engine.idle();
      expect(filesUnder(join(h.dataDir, 'uploads'))).toEqual([]);
    } finally {
      const run = await h.api('GET', `/runs/${r.runId}`);
      if (run.state !== 'completed') await h.http('POST', `/runs/${r.runId}/cancel`);
      await this.offline(h.closeAllBut(this.honest).filter((id) => !honestIds.includes(id)));
    }
  }

  close(): Promise<void> {
    return this.h.close();
  }
}

/** How many cases share one round (each with its own attacker site). */
const CASES_PER_ROUND = 8;

/**
 * Declares a hostile table: one real coordinator for the file, the cases played
 * {@link CASES_PER_ROUND} to a round, each round closed by the honest sites' uploads.
 */
export function describeHostileTable(title: string, cases: HostileCase[]): void {
  describe(title, () => {
    let suite: HostileSuite;
    beforeAll(async () => {
      suite = await HostileSuite.start();
    });
    afterAll(() => suite?.close());
    for (let at = 0; at < cases.length; at += CASES_PER_ROUND) {
      const batch = cases.slice(at, at + CASES_PER_ROUND);
      describe(`round ${at / CASES_PER_ROUND + 1}`, () => {
        beforeAll(() => suite.openRound(batch.length));
        it.each(batch)('$name → $code', (c) => suite.run(c));
        it('the honest sites complete the round; its aggregate equals the control round’s', () =>
          suite.finishRound());
      });
    }
  });
}
