import { encodeWeights } from '@fedssl/shared/codec';
import {
  SIGNING_DOMAINS,
  canonicalJson,
  concatBytes,
  expectedChunkCount,
  generatePartyKeys,
  sealUpdate,
  signBytes,
  toBase64,
  utf8,
} from '@fedssl/shared/crypto';
import { MAX_CHUNK_BYTES, PROTOCOL_VERSION, type UpdateHeader } from '@fedssl/shared/protocol';
import { constantDelta, type FakeAgent } from '../../coordinator/src/runs/federation.fixture';
import { describeHostileTable, type HostileCase } from './suite';

/**
 * The update envelope under attack, over a real coordinator: forged and borrowed signatures,
 * other sites' identities, replays, stale or foreign tasks, tampered chunk streams, a content
 * key sealed to someone else, clock skew. Every row is checked on the four points of
 * {@link HostileSuite.run}.
 */

/** Re-signs an edited header with `agent`'s key: an authentic envelope that says something bad. */
function resign(agent: FakeAgent, header: UpdateHeader): { header: UpdateHeader; signature: string } {
  const bytes = concatBytes(utf8(SIGNING_DOMAINS.update), utf8(canonicalJson(header)));
  return { header, signature: signBytes(bytes, agent.keys.signing.secretKey) };
}

const CASES: HostileCase[] = [
  {
    name: 'header signed with a key no site registered',
    code: 'ENVELOPE_SIGNATURE_INVALID',
    log: 'update refused',
    act: ({ m, mTask }) =>
      m.upload(m.agent.seal(mTask, { signingSecretKey: generatePartyKeys().signing.secretKey })),
  },
  {
    name: "key of another site: the attacker signs a header naming an honest site's task",
    code: 'ENVELOPE_SIGNATURE_INVALID',
    log: 'update refused',
    act: ({ m, honest, honestTasks }) =>
      m.upload(
        m.agent.seal(honestTasks[0]!, {
          fields: (f) => void (f.siteId = honest[0]!.siteId),
        }),
      ),
  },
  {
    name: "an honest site's authentic envelope forwarded over the attacker's connection",
    code: 'SITE_AUTH_FAILED',
    log: 'update refused',
    act: ({ m, honest, honestTasks }) => m.upload(honest[0]!.agent.seal(honestTasks[0]!)),
  },
  {
    name: 'header naming a site that does not exist',
    code: 'SITE_NOT_FOUND',
    log: 'update refused',
    act: ({ m, mTask }) => m.upload(m.agent.seal(mTask, { fields: (f) => void (f.siteId = 'site-nobody') })),
  },
  {
    name: 'header of a revoked site (signed with its real, stolen key)',
    code: 'SITE_REVOKED',
    log: 'update refused',
    act: async ({ h, m, mTask }) => {
      const revoked = await h.enroll('Revoked');
      await h.api('POST', `/sites/${revoked.siteId}/revoke`, { reason: 'hostile suite' });
      return m.upload(
        m.agent.seal(mTask, {
          fields: (f) => void (f.siteId = revoked.siteId),
          signingSecretKey: revoked.keys.signing.secretKey,
        }),
      );
    },
  },
  // The very envelope already accepted, sent again by its own site, is answered "accepted" again
  // with the same update id and stores nothing (an honest retry after a lost commit answer looks
  // exactly like it): coordinator/src/uploads/upload.service.test.ts. Any other envelope for
  // that task is refused:
  {
    name: 'a new envelope for a task of a round already published',
    code: 'TASK_ALREADY_ANSWERED',
    log: 'update refused',
    act: ({ honest }) => honest[0]!.upload(honest[0]!.agent.seal(honest[0]!.tasks[0]!)),
  },
  {
    name: 'retry of a task after its envelope was rejected (replay, same task)',
    code: 'TASK_ALREADY_ANSWERED',
    log: 'update refused',
    attackerTask: 'rejected',
    act: async ({ m, mTask }) => {
      const first = await m.upload(m.agent.seal(mTask, { fields: (f) => void (f.exampleCount = 0) }));
      if (first.ok || first.error.code !== 'UPDATE_EXAMPLE_COUNT_INVALID') return first;
      return m.upload(m.agent.seal(mTask));
    },
  },
  {
    name: 'update for a future round of its run',
    code: 'TASK_UNKNOWN',
    log: 'update refused',
    act: ({ m, mTask }) => m.upload(m.agent.seal(mTask, { fields: (f) => void (f.round = mTask.round + 1) })),
  },
  {
    name: 'update naming another run than its task',
    code: 'TASK_UNKNOWN',
    log: 'update refused',
    act: ({ m, mTask, honest }) =>
      m.upload(m.agent.seal(mTask, { fields: (f) => void (f.runId = honest[0]!.tasks[0]!.runId) })),
  },
  {
    name: 'path traversal in the header run id',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: 'update refused',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask);
      return m.emit('update:begin', {
        header: { ...sealed.header, runId: '../../models' },
        signature: sealed.signature,
      });
    },
  },
  {
    name: 'stale base model hash',
    code: 'UPDATE_BASE_MODEL_MISMATCH',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask, honest }) =>
      m.upload(
        m.agent.seal(mTask, {
          fields: (f) => void (f.baseModelHash = honest[0]!.tasks[0]!.modelHash.replace(/^./, 'f')),
        }),
      ),
  },
  {
    name: 'task nonce not echoed',
    code: 'UPDATE_TASK_NONCE_MISMATCH',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) =>
      m.upload(
        m.agent.seal(mTask, { fields: (f) => void (f.taskNonce = toBase64(new Uint8Array(32).fill(9))) }),
      ),
  },
  {
    name: 'header from another protocol version (signed)',
    code: 'PROTOCOL_VERSION_MISMATCH',
    log: 'update refused',
    act: ({ m, mTask }) =>
      m.upload(m.agent.seal(mTask, { fields: (f) => void (f.protocolVersion = PROTOCOL_VERSION + 1) })),
  },
  {
    name: 'header missing a field',
    code: 'PROTOCOL_INVALID_MESSAGE',
    log: 'update refused',
    act: ({ m, mTask }) => {
      const { header, signature } = m.agent.seal(mTask);
      const { ciphertextSha512: _drop, ...rest } = header;
      return m.emit('update:begin', { header: rest, signature });
    },
  },
  {
    name: 'header whose chunk count does not fit its sizes (signed)',
    code: 'ENVELOPE_HEADER_INVALID',
    log: 'update refused',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask);
      return m.emit(
        'update:begin',
        resign(m.agent, { ...sealed.header, chunkCount: sealed.header.chunkCount + 3 }),
      );
    },
  },
  {
    name: 'created-at one hour in the future (clock skew)',
    code: 'UPDATE_CLOCK_SKEW',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) =>
      m.upload(
        m.agent.seal(mTask, {
          fields: (f) => void (f.createdAt = new Date(Date.now() + 3_600_000).toISOString()),
        }),
      ),
  },
  {
    name: 'created-at a day before its task was issued (clock skew)',
    code: 'UPDATE_CLOCK_SKEW',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) =>
      m.upload(
        m.agent.seal(mTask, {
          fields: (f) => void (f.createdAt = new Date(Date.parse(mTask.issuedAt) - 86_400_000).toISOString()),
        }),
      ),
  },
  {
    name: 'altered chunk',
    code: 'ENVELOPE_CHUNK_INVALID',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      const chunks = sealed.chunks.map((c) => c.slice());
      chunks[1]![5]! ^= 0x01;
      return m.upload(sealed, chunks);
    },
  },
  {
    name: 'reordered chunks (same lengths, swapped)',
    code: 'ENVELOPE_CHUNK_INVALID',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      const [c0, c1, ...rest] = sealed.chunks;
      return m.upload(sealed, [c1!, c0!, ...rest]);
    },
  },
  {
    name: 'dropped chunk, then commit',
    code: 'ENVELOPE_CHUNK_COUNT',
    log: 'update refused',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      return m.upload(sealed, sealed.chunks.slice(0, -1));
    },
  },
  {
    name: 'duplicated chunk (same index sent twice)',
    code: 'UPLOAD_OUT_OF_ORDER',
    log: 'update refused',
    act: async ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      const begin = await m.begin(sealed);
      if (!begin.ok) return begin;
      const chunk0 = { uploadId: begin.uploadId, index: 0, data: sealed.chunks[0] };
      const first = await m.emit('update:chunk', chunk0);
      return first.ok ? m.emit('update:chunk', chunk0) : first;
    },
  },
  {
    name: 'duplicated chunk content in the next slot',
    code: 'ENVELOPE_CHUNK_INVALID',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      const [c0, , ...rest] = sealed.chunks;
      return m.upload(sealed, [c0!, c0!, ...rest]);
    },
  },
  {
    name: 'extra chunk past the signed count',
    code: 'ENVELOPE_CHUNK_INVALID',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      return m.upload(sealed, [...sealed.chunks, sealed.chunks[0]!]);
    },
  },
  {
    name: 'chunk flood: 300 out-of-order chunks without waiting for acks',
    code: 'UPLOAD_OUT_OF_ORDER',
    log: 'update refused',
    act: async ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { chunkSize: 1024 });
      const begin = await m.begin(sealed);
      if (!begin.ok) return begin;
      const acks = await Promise.all(
        Array.from({ length: 300 }, () =>
          m.emit('update:chunk', { uploadId: begin.uploadId, index: 2, data: sealed.chunks[2] }),
        ),
      );
      const codes = new Set(acks.map((a) => (a.ok ? 'accepted' : a.error.code)));
      return codes.size === 1 ? acks[0] : { code: [...codes].join(',') };
    },
  },
  {
    name: 'declared update far larger than the run model (disk exhaustion)',
    code: 'UPDATE_TENSORS_INVALID',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask);
      const plaintextBytes = 2 ** 34;
      const header = {
        ...sealed.header,
        plaintextBytes,
        chunkSize: MAX_CHUNK_BYTES,
        chunkCount: expectedChunkCount(plaintextBytes, MAX_CHUNK_BYTES),
      };
      return m.emit('update:begin', resign(m.agent, header));
    },
  },
  {
    name: 'chunk id of an upload that does not exist',
    code: 'UPLOAD_UNKNOWN',
    log: 'update refused',
    act: ({ m }) => m.emit('update:chunk', { uploadId: 'up-0000', index: 0, data: new Uint8Array(16) }),
  },
  {
    name: 'ciphertext hash in the header does not match the chunks (signed)',
    code: 'ENVELOPE_HASH_MISMATCH',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask);
      const signed = resign(m.agent, { ...sealed.header, ciphertextSha512: 'ab'.repeat(64) });
      return m.upload({ ...sealed, ...signed });
    },
  },
  {
    name: 'content key sealed to a key that is not the coordinator’s',
    code: 'ENVELOPE_KEY_UNSEALABLE',
    log: 'update refused',
    attackerTask: 'rejected',
    act: ({ m, mTask }) =>
      m.upload(
        sealUpdate({
          plaintext: encodeWeights(constantDelta(mTask.model, 0.5)),
          fields: {
            protocolVersion: PROTOCOL_VERSION,
            siteId: m.siteId,
            runId: mTask.runId,
            round: mTask.round,
            taskId: mTask.taskId,
            taskNonce: mTask.nonce,
            baseModelHash: mTask.modelHash,
            exampleCount: 20,
            metrics: {},
            createdAt: new Date().toISOString(),
          },
          chunkSize: 4096,
          siteSigningSecretKey: m.agent.keys.signing.secretKey,
          coordinatorBoxPublicKey: generatePartyKeys().box.publicKey,
        }),
      ),
  },
];

describeHostileTable('hostile update envelopes (real coordinator, real sockets)', CASES);
