import type { SecAggAnswer, SecAggStep, SignedTask } from '@fedssl/shared/protocol';

/** Nest injection token for the {@link AgentTransport} the round engine uses. */
export const AGENT_TRANSPORT = Symbol('AGENT_TRANSPORT');

/** The answer of an agent to a task offer. */
export type TaskOfferResult = { accepted: true } | { accepted: false; reason: string };

/**
 * The seam between the round engine and the agents (Flower's `Grid`). The socket.io
 * gateway is one implementation, {@link InMemoryTransport} another; round logic only ever
 * talks to this interface, so it never imports socket.io.
 */
export interface AgentTransport {
  /** Sites with an authenticated connection right now, sorted. */
  onlineSiteIds(): string[];
  /**
   * Offers a signed task to a site and resolves with the agent's answer. Resolves (never
   * rejects) with `accepted: false` if the site is offline or does not answer in time.
   */
  offerTask(siteId: string, task: SignedTask): Promise<TaskOfferResult>;
  /** Tells a site to stop working on a task (best effort; no answer expected). */
  cancelTask(siteId: string, taskId: string, reason: string): void;
  /**
   * Sends a secure-aggregation step to a site and resolves with its answer; rejects if the
   * site is offline, refuses, or does not answer in time (docs/privacy.md).
   */
  secAggStep?(siteId: string, msg: SecAggStep): Promise<SecAggAnswer>;
}
