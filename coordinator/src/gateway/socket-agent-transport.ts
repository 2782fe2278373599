import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import type { Socket } from 'socket.io';
import type {
  Ack,
  AgentToCoordinatorEvents,
  CoordinatorToAgentEvents,
  SecAggAnswer,
  SecAggStep,
  SignedTask,
} from '@fedssl/shared/protocol';
import { secAggAnswerSchema } from '@fedssl/shared/protocol';
import { LOGGER } from '../config/config';
import { PresenceService } from '../sites/presence.service';
import type { AgentTransport, TaskOfferResult } from '../transport/agent-transport';

/** How long an agent has to acknowledge a task offer. */
export const TASK_OFFER_ACK_TIMEOUT_MS = 30_000;

export type AgentSocket = Socket<AgentToCoordinatorEvents, CoordinatorToAgentEvents>;

/**
 * {@link AgentTransport} over socket.io. Holds only connection state (which authenticated
 * sockets belong to which site); who is online is PresenceService's answer.
 */
@Injectable()
export class SocketAgentTransport implements AgentTransport {
  private readonly log: Logger;
  private readonly sockets = new Map<string, AgentSocket[]>();
  ackTimeoutMs = TASK_OFFER_ACK_TIMEOUT_MS;

  constructor(
    @Inject(PresenceService) private readonly presence: PresenceService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'SocketAgentTransport' });
  }

  /** Registers an authenticated socket of a site (newest last). */
  attach(siteId: string, socket: AgentSocket): void {
    const list = this.sockets.get(siteId) ?? [];
    list.push(socket);
    this.sockets.set(siteId, list);
  }

  detach(siteId: string, socket: AgentSocket): void {
    const list = (this.sockets.get(siteId) ?? []).filter((s) => s !== socket);
    if (list.length > 0) this.sockets.set(siteId, list);
    else this.sockets.delete(siteId);
  }

  /** The authenticated sockets of a site. */
  socketsOf(siteId: string): readonly AgentSocket[] {
    return this.sockets.get(siteId) ?? [];
  }

  onlineSiteIds(): string[] {
    return this.presence.onlineSiteIds();
  }

  offerTask(siteId: string, task: SignedTask): Promise<TaskOfferResult> {
    const socket = this.socketsOf(siteId).at(-1);
    if (!socket) return Promise.resolve({ accepted: false, reason: 'site is offline' });
    return new Promise((resolve) => {
      socket.timeout(this.ackTimeoutMs).emit('task:offer', task, (err: Error | null, res: Ack) => {
        if (err) {
          this.log.warn({ siteId, taskId: task.task.taskId }, 'task offer not acknowledged in time');
          resolve({ accepted: false, reason: 'no acknowledgement before the timeout' });
        } else if (res && res.ok === true) resolve({ accepted: true });
        else
          resolve({
            accepted: false,
            reason: res?.error ? `${res.error.code}: ${res.error.message}` : 'malformed acknowledgement',
          });
      });
    });
  }

  cancelTask(siteId: string, taskId: string, reason: string): void {
    for (const s of this.socketsOf(siteId)) s.emit('task:cancel', { taskId, reason: reason.slice(0, 500) });
  }

  secAggStep(siteId: string, msg: SecAggStep): Promise<SecAggAnswer> {
    const socket = this.socketsOf(siteId).at(-1);
    if (!socket) return Promise.reject(new Error('site is offline'));
    return new Promise((resolve, reject) => {
      socket
        .timeout(this.ackTimeoutMs)
        .emit('secagg:step', msg, (err: Error | null, res: Ack<SecAggAnswer>) => {
          if (err) return reject(new Error(`no answer to secagg:${msg.step} before the timeout`));
          if (res?.ok !== true)
            return reject(
              new Error(res?.error ? `${res.error.code}: ${res.error.message}` : 'malformed answer'),
            );
          const { ok: _ok, ...answer } = res;
          const parsed = secAggAnswerSchema.safeParse(answer);
          if (parsed.success) resolve(parsed.data);
          else reject(new Error(`malformed secagg:${msg.step} answer`));
        });
    });
  }
}
