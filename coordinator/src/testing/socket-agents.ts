import { io, type Socket } from 'socket.io-client';
import { encodeWeights } from '@fedssl/shared/codec';
import {
  fromBase64,
  generatePartyKeys,
  sealUpdate,
  signBytes,
  verifySignedTask,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type Ack,
  type AuthChallenge,
  type CoordinatorKeyChain,
  type SignedTask,
  type Task,
} from '@fedssl/shared/protocol';
import { constantDelta } from '../runs/federation.fixture';
import { enrollRequest } from './enrollment';
import type { RestClient } from './rest-client';

/**
 * Test support: agents written by hand over real socket.io connections to a whole coordinator
 * (see {@link startTestCoordinator}), for tests that drive the wire protocol step by step.
 */

/** An enrolled, authenticated agent. */
export interface SocketSite {
  siteId: string;
  keys: PartyKeys;
  /** The coordinator keys this agent trusts: from enrollment, replaced by each `keys:announce`. */
  pinned: { signing: Uint8Array; box: Uint8Array };
  socket: Socket;
  /** The first task offered, verified against `pinned.signing` (acknowledged, or refused and rejected). */
  task: Promise<Task>;
}

/** Opens agent connections to one coordinator and closes them all at the end of a test. */
export class SocketAgents {
  private readonly sockets: Socket[] = [];

  /** `admin` enrolls sites (it issues enrollment tokens). */
  constructor(
    private readonly url: string,
    private readonly admin: RestClient,
  ) {}

  /** Connects as `siteId` and answers the challenge with `keys`; not yet authenticated on return. */
  connect(siteId: string, keys: PartyKeys): Socket {
    const socket = io(`${this.url}${AGENT_NAMESPACE}`, {
      auth: { siteId, protocolVersion: PROTOCOL_VERSION, agentVersion: 't' },
      transports: ['websocket'],
      reconnection: false,
    });
    this.sockets.push(socket);
    socket.once('auth:challenge', (ch: AuthChallenge) =>
      socket.emit('auth:response', {
        signature: signBytes(authChallengeBytes(ch.nonce, siteId), keys.signing.secretKey),
      }),
    );
    return socket;
  }

  /** Enrolls a site named `name` over HTTP with fresh keys, connects and waits until authenticated. */
  async enroll(name: string): Promise<SocketSite> {
    const tok = await this.admin.ok('POST', '/enrollment-tokens', { siteName: name });
    const keys = generatePartyKeys();
    const enrolled = await this.admin.ok('POST', '/enroll', enrollRequest(tok.token, keys, 't'), null);
    const siteId = enrolled.siteId as string;
    const ck = enrolled.coordinator as { signingPublicKey: string; boxPublicKey: string };
    // What the agent trusts; a live rotation replaces it (the real agent checks the chain).
    const pinned = { signing: fromBase64(ck.signingPublicKey, 32), box: fromBase64(ck.boxPublicKey, 32) };
    const socket = this.connect(siteId, keys);
    socket.on('keys:announce', (chain: CoordinatorKeyChain) => {
      pinned.signing = fromBase64(chain.current.signingPublicKey, 32);
      pinned.box = fromBase64(chain.current.boxPublicKey, 32);
    });
    const task = new Promise<Task>((resolve, reject) =>
      socket.on('task:offer', (st: SignedTask, ack: (r: Ack) => void) => {
        try {
          const t = verifySignedTask(st, pinned.signing);
          ack({ ok: true });
          resolve(t);
        } catch (e) {
          ack({ ok: false, error: { code: 'TASK_SIGNATURE_INVALID', message: String(e) } });
          reject(e as Error);
        }
      }),
    );
    await new Promise((resolve) => socket.once('auth:ok', resolve));
    return { siteId, keys, pinned, socket, task };
  }

  /** Disconnects every socket opened so far. */
  closeAll(): void {
    for (const s of this.sockets.splice(0)) s.disconnect();
  }
}

/** How {@link sealDelta} seals. */
export interface SealOptions {
  /** The coordinator box key the content key is sealed to. */
  boxPublicKey: Uint8Array;
  /** Every weight of the delta (default 0.1). */
  value?: number;
  exampleCount?: number;
  metrics?: Record<string, number>;
  chunkSize?: number;
}

/** An update for `task` from `site`: a constant delta of the task's model, sealed and signed. */
export function sealDelta(site: Pick<SocketSite, 'siteId' | 'keys'>, task: Task, opts: SealOptions) {
  return sealUpdate({
    plaintext: encodeWeights(constantDelta(task.model, opts.value ?? 0.1)),
    fields: {
      protocolVersion: PROTOCOL_VERSION,
      siteId: site.siteId,
      runId: task.runId,
      round: task.round,
      taskId: task.taskId,
      taskNonce: task.nonce,
      baseModelHash: task.modelHash,
      exampleCount: opts.exampleCount ?? 10,
      metrics: opts.metrics ?? {},
      createdAt: new Date().toISOString(),
    },
    chunkSize: opts.chunkSize ?? 1024,
    siteSigningSecretKey: site.keys.signing.secretKey,
    coordinatorBoxPublicKey: opts.boxPublicKey,
  });
}

/**
 * `update:begin` and the first `chunks` chunks in order (all by default), without committing.
 * Returns the upload id and the `nextIndex` of every chunk's ack.
 * @throws Error with the coordinator's message when any step is refused.
 */
export async function sendUpload(
  socket: Socket,
  sealed: ReturnType<typeof sealDelta>,
  chunks = sealed.chunks.length,
): Promise<{ uploadId: string; nextIndexes: number[] }> {
  const begin = (await socket.emitWithAck('update:begin', {
    header: sealed.header,
    signature: sealed.signature,
  })) as Ack<{ uploadId: string; nextIndex: number }>;
  if (!begin.ok) throw new Error(begin.error.message);
  const nextIndexes: number[] = [];
  for (let i = 0; i < chunks; i++) {
    const r = (await socket.emitWithAck('update:chunk', {
      uploadId: begin.uploadId,
      index: i,
      data: sealed.chunks[i],
    })) as Ack<{ nextIndex: number }>;
    if (!r.ok) throw new Error(r.error.message);
    nextIndexes.push(r.nextIndex);
  }
  return { uploadId: begin.uploadId, nextIndexes };
}
