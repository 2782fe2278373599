import type { Ack, SecAggAnswer, SecAggStep, SignedTask } from '@fedssl/shared/protocol';
import type { AgentTransport, TaskOfferResult } from './agent-transport';

/** An in-process agent: callbacks the transport invokes instead of socket messages. */
export interface InMemoryAgent {
  onTask(task: SignedTask): Promise<TaskOfferResult> | TaskOfferResult;
  onCancel?(taskId: string, reason: string): void;
  onSecAgg?(msg: SecAggStep): Promise<Ack<SecAggAnswer>>;
}

/**
 * {@link AgentTransport} for tests and simulations: agents register in-process and are
 * "online" while registered. Connection state only; no round state lives here.
 */
export class InMemoryTransport implements AgentTransport {
  private readonly agents = new Map<string, InMemoryAgent>();
  /** Every offer made, in order (for assertions in tests). */
  readonly offers: { siteId: string; task: SignedTask }[] = [];
  readonly cancels: { siteId: string; taskId: string; reason: string }[] = [];

  /** Registers (or replaces) the agent of a site; it is online until {@link disconnect}. */
  connect(siteId: string, agent: InMemoryAgent): void {
    this.agents.set(siteId, agent);
  }

  disconnect(siteId: string): void {
    this.agents.delete(siteId);
  }

  onlineSiteIds(): string[] {
    return [...this.agents.keys()].sort();
  }

  async offerTask(siteId: string, task: SignedTask): Promise<TaskOfferResult> {
    this.offers.push({ siteId, task });
    const agent = this.agents.get(siteId);
    if (!agent) return { accepted: false, reason: 'site is offline' };
    try {
      return await agent.onTask(task);
    } catch (e) {
      return { accepted: false, reason: e instanceof Error ? e.message : String(e) };
    }
  }

  cancelTask(siteId: string, taskId: string, reason: string): void {
    this.cancels.push({ siteId, taskId, reason });
    this.agents.get(siteId)?.onCancel?.(taskId, reason);
  }

  async secAggStep(siteId: string, msg: SecAggStep): Promise<SecAggAnswer> {
    const agent = this.agents.get(siteId);
    if (!agent?.onSecAgg) throw new Error('site is offline');
    // Through JSON, as over the socket.
    const res = await agent.onSecAgg(JSON.parse(JSON.stringify(msg)) as SecAggStep);
    if (!res.ok) throw new Error(`${res.error.code}: ${res.error.message}`);
    const { ok: _ok, ...answer } = res;
    return JSON.parse(JSON.stringify(answer)) as SecAggAnswer;
  }
}
