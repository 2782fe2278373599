import type { Logger } from 'pino';
import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError } from '@fedssl/shared/errors';
import type { AgentTransport } from '../transport/agent-transport';
import { updateDimension } from './privacy-policy';
import { readMaskedUpdate, SecAggDriver, secureFedAvg } from './secagg-driver';

/** What the round engine knows of a run and round here (kept narrow on purpose). */
interface RunRef {
  id: string;
  config: { model: Parameters<typeof updateDimension>[0] };
}
interface RoundRef {
  round: number;
  attempt: number;
}

/** One accepted update as stored: who, its weight, and its decrypted plaintext on demand. */
export interface MaskedUpload {
  siteId: string;
  exampleCount: number;
  readPlain(): Uint8Array;
}

/**
 * The secure-aggregation sessions of running rounds, one per run, for the round engine: started
 * when a round's tasks are offered (the sites set up masks while they train) and consumed at
 * aggregation. In memory only: after a coordinator restart the session is gone, aggregation
 * fails with SECAGG_PROTOCOL and the round is retried as a new attempt with new keys.
 */
export class SecAggSessions {
  private readonly sessions = new Map<
    string,
    { round: number; attempt: number; driver: SecAggDriver; setup: Promise<string[] | null> }
  >();

  constructor(private readonly log: Logger) {}

  /**
   * Starts the key set-up with the sites of a round's tasks (runs in the background). Sites left
   * out of it could not mask, so their tasks are handed to `leftOut` (the engine drops them and
   * cancels them at the agent) instead of waiting for the deadline.
   */
  start(
    run: RunRef,
    round: RoundRef,
    tasks: readonly { id: string; siteId: string }[],
    transport: AgentTransport,
    leftOut: (taskId: string, siteId: string) => void,
  ): void {
    const peers = {
      step: (siteId: string, msg: Parameters<NonNullable<AgentTransport['secAggStep']>>[1]) => {
        if (!transport.secAggStep)
          return Promise.reject(new Error('transport cannot carry secure aggregation'));
        return transport.secAggStep(siteId, msg);
      },
    };
    const sessionId = `${run.id}/${round.round}/${round.attempt}`;
    const driver = new SecAggDriver(
      peers,
      sessionId,
      updateDimension(run.config.model),
      tasks.map((t) => ({ siteId: t.siteId, taskId: t.id })),
      this.log.child({ runId: run.id, round: round.round, attempt: round.attempt }),
    );
    const setup = driver.setup().then(
      (masking) => {
        for (const t of tasks) if (!masking.includes(t.siteId)) leftOut(t.id, t.siteId);
        return masking;
      },
      (e: unknown) => {
        this.log.error(
          { runId: run.id, round: round.round, err: (e as Error).message },
          'secure aggregation set-up failed',
        );
        for (const t of tasks) leftOut(t.id, t.siteId);
        return null;
      },
    );
    this.sessions.set(run.id, { round: round.round, attempt: round.attempt, driver, setup });
  }

  /**
   * FedAvg of the round's masked uploads through the unmasking step.
   * @throws FedsslError SECAGG_PROTOCOL when the session is missing (restart) or its set-up
   *   failed; whatever the unmasking throws.
   */
  async aggregate(
    runId: string,
    round: RoundRef,
    model: RunRef['config']['model'],
    uploads: readonly MaskedUpload[],
    global: NamedTensors,
  ): Promise<{ weights: NamedTensors; sites: { siteId: string; exampleCount: number }[] }> {
    const s = this.sessions.get(runId);
    if (!s || s.round !== round.round || s.attempt !== round.attempt)
      throw new FedsslError(
        'SECAGG_PROTOCOL',
        'no secure-aggregation session for this round (coordinator restarted?)',
      );
    try {
      if ((await s.setup) === null)
        throw new FedsslError('SECAGG_PROTOCOL', 'secure-aggregation set-up failed');
      const masked = new Map(uploads.map((u) => [u.siteId, readMaskedUpdate(u.readPlain(), model)]));
      const { sum, sites } = await s.driver.unmaskSum(masked);
      const included = uploads.filter((u) => sites.includes(u.siteId));
      const total = included.reduce((n, u) => n + u.exampleCount, 0);
      return {
        weights: secureFedAvg(global, sum, total),
        sites: included.map((u) => ({ siteId: u.siteId, exampleCount: u.exampleCount })),
      };
    } finally {
      this.sessions.delete(runId);
    }
  }
}
