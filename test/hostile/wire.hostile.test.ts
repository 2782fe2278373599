import { generatePartyKeys, signBytes } from '@fedssl/shared/crypto';
import {
  MAX_CHUNK_BYTES,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type AuthChallenge,
} from '@fedssl/shared/protocol';
import { MAX_HTTP_BUFFER_SIZE } from '../../coordinator/src/admin/http/listen';
import { RawAgent, type HostileCoordinator, type Refusal } from './harness';
import { describeHostileTable, type HostileCase } from './suite';

/**
 * The wire layer under attack, against a real coordinator's socket.io gateway: handshakes
 * that lie, challenges answered with the wrong key, events before authentication, schema
 * violations, unknown events, frames socket.io cannot parse, frames beyond the size limit,
 * floods, and ids carrying path traversal.
 */

const auth = (siteId: unknown, protocolVersion = PROTOCOL_VERSION) => ({
  siteId,
  protocolVersion,
  agentVersion: 'hostile',
});

/** Connects with `handshake` and resolves with the coded error the server sent before disconnecting. */
async function refusedHandshake(h: HostileCoordinator, handshake: unknown): Promise<Refusal | undefined> {
  const socket = h.socket(handshake);
  const error = new Promise<Refusal>((resolve) => socket.once('error', resolve));
  await new Promise<void>((resolve) => socket.once('disconnect', () => resolve()));
  return error;
}

/** Connects as `siteId`, answers the challenge with `respond`, and returns the refusal. */
async function refusedChallenge(
  h: HostileCoordinator,
  siteId: string,
  respond: (challenge: AuthChallenge) => unknown,
): Promise<Refusal | undefined> {
  const socket = h.socket(auth(siteId));
  const error = new Promise<Refusal>((resolve) => socket.once('error', resolve));
  const challenge = await new Promise<AuthChallenge>((resolve) => socket.once('auth:challenge', resolve));
  socket.emit('auth:response', respond(challenge));
  await new Promise<void>((resolve) => socket.once('disconnect', () => resolve()));
  return error;
}

/** A connection that never answers the challenge. */
async function unauthenticated(h: HostileCoordinator, siteId: string) {
  const socket = h.socket(auth(siteId));
  await new Promise((resolve) => socket.once('auth:challenge', resolve));
  return socket;
}

const refused = 'agent connection refused';
const messageRefused = 'agent message refused';

const CASES: HostileCase[] = [
  {
    name: 'handshake without a site id',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: refused,
    act: ({ h }) => refusedHandshake(h, { protocolVersion: PROTOCOL_VERSION, agentVersion: 'x' }),
  },
  {
    name: 'handshake site id with a path traversal',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: refused,
    act: ({ h }) => refusedHandshake(h, auth('../../etc/passwd')),
  },
  {
    name: 'handshake site id ".."',
    code: 'SITE_NOT_FOUND',
    log: refused,
    act: ({ h }) => refusedHandshake(h, auth('..')),
  },
  {
    name: 'unknown site',
    code: 'SITE_NOT_FOUND',
    log: refused,
    act: ({ h }) => refusedHandshake(h, auth('site-never-enrolled')),
  },
  {
    name: 'revoked site',
    code: 'SITE_REVOKED',
    log: refused,
    act: async ({ h }) => {
      const site = await h.enroll('Revoked');
      await h.api('POST', `/sites/${site.siteId}/revoke`, { reason: 'hostile suite' });
      return refusedHandshake(h, auth(site.siteId));
    },
  },
  {
    name: 'site whose enrollment was never completed',
    code: 'SITE_AUTH_FAILED',
    log: refused,
    act: async ({ h }) => {
      const tok = await h.api('POST', '/enrollment-tokens', { siteName: `Pending ${Date.now()}` });
      return refusedHandshake(h, auth(tok.siteId));
    },
  },
  {
    name: 'another protocol version',
    code: 'PROTOCOL_VERSION_MISMATCH',
    log: refused,
    act: ({ h, m }) => refusedHandshake(h, auth(m.siteId, PROTOCOL_VERSION + 1)),
  },
  {
    name: 'challenge signed with a key no site registered',
    code: 'SITE_AUTH_FAILED',
    log: refused,
    act: ({ h, m }) =>
      refusedChallenge(h, m.siteId, (c) => ({
        signature: signBytes(authChallengeBytes(c.nonce, m.siteId), generatePartyKeys().signing.secretKey),
      })),
  },
  {
    name: "key of another site: the attacker claims an honest site's identity",
    code: 'SITE_AUTH_FAILED',
    log: refused,
    act: ({ h, m, honest }) =>
      refusedChallenge(h, honest[0]!.siteId, (c) => ({
        signature: signBytes(authChallengeBytes(c.nonce, honest[0]!.siteId), m.agent.keys.signing.secretKey),
      })),
  },
  {
    name: 'challenge answer that is not a signature',
    code: 'SITE_AUTH_FAILED',
    log: refused,
    act: ({ h, m }) => refusedChallenge(h, m.siteId, () => ({ signature: { $ne: null }, extra: 1 })),
  },
  {
    name: 'update begun before authentication',
    code: 'SITE_AUTH_FAILED',
    log: messageRefused,
    act: async ({ h, m, mTask }) => {
      const socket = await unauthenticated(h, m.siteId);
      const sealed = m.agent.seal(mTask);
      return socket
        .timeout(5000)
        .emitWithAck('update:begin', { header: sealed.header, signature: sealed.signature });
    },
  },
  {
    name: 'flood of 200 events before authentication',
    code: 'SITE_AUTH_FAILED',
    log: messageRefused,
    act: async ({ h, m }) => {
      const socket = await unauthenticated(h, m.siteId);
      const acks = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          socket.timeout(10_000).emitWithAck('model:chunk', { version: 'x', offset: i, length: 1 }),
        ),
      );
      const codes = new Set(acks.map((a: { error?: { code: string } }) => a.error?.code));
      return codes.size === 1 ? acks[0] : { code: [...codes].join(',') };
    },
  },
  {
    name: 'status that violates its schema',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: messageRefused,
    act: ({ m }) => m.emit('status', { state: 'pwned', backend: 'x'.repeat(10_000), exampleCount: -1 }),
  },
  {
    name: 'an event the protocol does not have',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: messageRefused,
    act: ({ m }) => m.emit('admin:grant', { role: 'admin' }),
  },
  {
    name: 'an event named by a number, with an ack (raw packet)',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: messageRefused,
    act: async ({ h, m }) => {
      const raw = await RawAgent.authenticated(h, m.agent);
      raw.send('42/agents,7[404,{"x":1}]');
      const ack = await raw.nextAck(7);
      return (ack[0] as { error: Refusal }).error;
    },
  },
  {
    name: 'model chunk of a version named with a path traversal',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: messageRefused,
    act: ({ m }) => m.emit('model:chunk', { version: '../../keys/coordinator', offset: 0, length: 64 }),
  },
  {
    name: 'model manifest of version ".."',
    code: 'MODEL_VERSION_NOT_FOUND',
    log: messageRefused,
    act: ({ m }) => m.emit('model:manifest', { version: '..' }),
  },
  {
    name: 'model chunk longer than the chunk limit',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: messageRefused,
    act: ({ m, runId }) => m.emit('model:chunk', { version: `${runId}.r0`, offset: 0, length: 2 ** 31 }),
  },
  {
    name: "task failure reported for an honest site's task",
    code: 'TASK_UNKNOWN',
    log: messageRefused,
    act: ({ m, honestTasks }) =>
      m.emit('task:failed', { taskId: honestTasks[0]!.taskId, code: 'X', message: 'sabotage' }),
  },
  {
    name: 'update chunk larger than MAX_CHUNK_BYTES (within the frame limit)',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: 'update refused',
    act: async ({ m, mTask }) => {
      const begin = await m.begin(m.agent.seal(mTask));
      if (!begin.ok) return begin;
      return m.emit('update:chunk', {
        uploadId: begin.uploadId,
        index: 0,
        data: new Uint8Array(MAX_CHUNK_BYTES + 1024),
      });
    },
  },
  {
    name: 'malformed JSON in a socket.io packet',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: 'agent protocol violation',
    act: async ({ h, m }) => {
      const raw = await RawAgent.authenticated(h, m.agent);
      raw.send('42/agents,["status",{"state":');
      return raw.refusal();
    },
  },
  {
    name: 'binary frame with no packet announcing it',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: 'agent protocol violation',
    act: async ({ h, m }) => {
      const raw = await RawAgent.authenticated(h, m.agent);
      raw.send(Buffer.alloc(1024, 7));
      return raw.refusal();
    },
  },
  {
    name: 'packet announcing more binary attachments than allowed',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: 'agent protocol violation',
    act: async ({ h, m }) => {
      const raw = await RawAgent.authenticated(h, m.agent);
      raw.send('451000-/agents,["update:chunk",{"_placeholder":true,"num":0}]');
      return raw.refusal();
    },
  },
  {
    name: 'frame beyond the socket.io size limit',
    code: 'PROTOCOL_MESSAGE_TOO_LARGE',
    log: 'agent protocol violation',
    act: async ({ h, m }) => {
      const raw = await RawAgent.authenticated(h, m.agent);
      raw.send(`42/agents,["status","${'x'.repeat(MAX_HTTP_BUFFER_SIZE)}"]`);
      const r = await raw.refusal();
      // The server cannot answer on a connection it had to cut: the close code is its answer.
      return r.code === 'WS_CLOSE_1009' ? { code: 'PROTOCOL_MESSAGE_TOO_LARGE' } : r;
    },
  },
  {
    name: 'frame beyond the size limit before joining the namespace',
    code: 'PROTOCOL_MESSAGE_TOO_LARGE',
    log: 'agent protocol violation',
    act: async ({ h }) => {
      const raw = await RawAgent.open(h, auth('site-anyone'));
      raw.send(Buffer.alloc(MAX_HTTP_BUFFER_SIZE + 1));
      const r = await raw.refusal();
      return r.code === 'WS_CLOSE_1009' ? { code: 'PROTOCOL_MESSAGE_TOO_LARGE' } : r;
    },
  },
];

describeHostileTable('hostile wire input (real coordinator, real socket.io)', CASES);
