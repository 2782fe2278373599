import type { Logger } from 'pino';
import type { NamedTensors } from '@fedssl/shared/codec';
import { FedsslError, isFedsslError } from '@fedssl/shared/errors';
import { secAggStepSchema, type Ack, type SecAggAnswer } from '@fedssl/shared/protocol';
import { encodeMaskedInput, SecAggClient, type EncryptedShare } from '@fedssl/shared/secagg';

interface Session {
  client: SecAggClient;
  boxes: EncryptedShare[] | null;
  /** Resolvers of {@link SecAggParticipant.ready} calls waiting for the boxes. */
  waiters: (() => void)[];
}

/** Sessions kept: the current task's and a few finished ones still to be unmasked. */
const MAX_SESSIONS = 4;

/**
 * The site's side of secure aggregation: answers the coordinator's `secagg:step` messages for
 * the task it is working on and masks its update before sealing. The site's input is
 * exampleCount·Δ (so the coordinator can form FedAvg from the sum), in fixed point.
 */
export class SecAggParticipant {
  private readonly sessions = new Map<string, Session>();
  /** ready() calls made before the session exists (training finished before set-up began). */
  private readonly early = new Map<string, (() => void)[]>();

  constructor(
    private readonly siteId: string,
    /**
     * True when `taskId` is a task this agent verified (signed, for this site) whose run asks for
     * secure aggregation (checked when a session starts; later steps need the session).
     */
    private readonly isSecureTask: (taskId: string) => boolean,
    private readonly log: Logger,
  ) {}

  /** Handles one `secagg:step`; answers `{ ok: false, error }` to anything out of place. */
  async handleStep(msg: unknown): Promise<Ack<SecAggAnswer>> {
    try {
      return { ok: true, ...(await this.step(msg)) };
    } catch (e) {
      const code = isFedsslError(e) ? e.code : 'SECAGG_PROTOCOL';
      this.log.warn({ code, err: (e as Error).message }, 'secure aggregation step refused');
      return { ok: false, error: { code, message: (e as Error).message.slice(0, 500) } };
    }
  }

  private async step(msg: unknown): Promise<SecAggAnswer> {
    const parsed = secAggStepSchema.safeParse(msg);
    if (!parsed.success) throw new FedsslError('PROTOCOL_INVALID_MESSAGE', 'malformed secagg:step');
    const m = parsed.data;
    if (m.step === 'advertise') {
      // Only for a task this agent verified; later steps (unmasking comes after the upload,
      // when the task is done) need the session this created.
      if (!this.isSecureTask(m.taskId))
        throw new FedsslError(
          'SECAGG_PROTOCOL',
          `task ${m.taskId} is not a secure-aggregation task of this site`,
        );
      if (this.sessions.has(m.taskId)) throw new FedsslError('SECAGG_PROTOCOL', 'keys already advertised');
      const client = new SecAggClient(this.siteId, {
        sessionId: m.sessionId,
        threshold: m.threshold,
        dimension: m.dimension,
        fractionBits: m.fractionBits,
      });
      this.sessions.set(m.taskId, { client, boxes: null, waiters: this.early.get(m.taskId) ?? [] });
      this.early.delete(m.taskId);
      for (const old of [...this.sessions.keys()].slice(0, -MAX_SESSIONS)) this.sessions.delete(old);
      return { step: 'advertise', keys: client.advertise() };
    }
    const s = this.sessions.get(m.taskId);
    if (!s) throw new FedsslError('SECAGG_PROTOCOL', `no secure-aggregation session for task ${m.taskId}`);
    switch (m.step) {
      case 'share':
        return { step: 'share', shares: await s.client.shareKeys(m.roster) };
      case 'boxes':
        if (s.boxes) throw new FedsslError('SECAGG_PROTOCOL', 'share boxes already received');
        s.boxes = m.boxes;
        for (const w of s.waiters.splice(0)) w();
        return { step: 'boxes' };
      case 'unmask':
        return { step: 'unmask', unmask: s.client.unmask(m.survivors) };
    }
  }

  /**
   * Resolves once the task's masks are set up (its share boxes arrived). Rejects when `signal`
   * aborts (task cancelled, deadline) — the task then fails instead of uploading in the clear.
   */
  async ready(taskId: string, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const s = this.sessions.get(taskId);
    if (s?.boxes) return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.early.delete(taskId);
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const done = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      if (s) s.waiters.push(done);
      else this.early.set(taskId, [...(this.early.get(taskId) ?? []), done]);
    });
  }

  /**
   * The plaintext to seal instead of the delta: exampleCount·Δ, flattened in tensor order,
   * masked. Throws (and the task fails) without a session, or if the values do not fit.
   * @throws FedsslError SECAGG_PROTOCOL, SECAGG_OVERFLOW.
   */
  maskUpdate(taskId: string, delta: NamedTensors, exampleCount: number): Uint8Array {
    const s = this.sessions.get(taskId);
    if (!s?.boxes)
      throw new FedsslError('SECAGG_PROTOCOL', `secure aggregation of task ${taskId} was not set up`);
    const x = new Float64Array(delta.reduce((n, t) => n + t.data.length, 0));
    let off = 0;
    for (const t of delta) for (let i = 0; i < t.data.length; i++) x[off++] = exampleCount * t.data[i]!;
    return encodeMaskedInput(s.client.maskedInput(s.boxes, x).masked);
  }
}
