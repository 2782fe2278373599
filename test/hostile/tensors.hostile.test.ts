import { encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import type { Task } from '@fedssl/shared/protocol';
import { constantDelta } from '../../coordinator/src/runs/federation.fixture';
import type { AgentClient } from './harness';
import { describeHostileTable, type HostileCase } from './suite';

/**
 * What is inside an authentic envelope, under attack: tensors that do not match the run's
 * model (names, shapes, dtypes, count), non-finite values, a norm far beyond the bound,
 * example counts that would skew the weighting, plaintext that is not the weight codec.
 * Each is sealed and signed by the attacker site itself, so only the content checks stand
 * between it and the aggregate; each rejects the attacker's task.
 */

/** Uploads `delta` (edited from the honest shape) as the attacker's update. */
function uploadDelta(m: AgentClient, mTask: Task, edit: (d: NamedTensors) => NamedTensors | void) {
  const delta = constantDelta(mTask.model, 0.5);
  return m.upload(m.agent.seal(mTask, { delta: edit(delta) ?? delta }));
}

/** Uploads raw plaintext bytes (edited from the honest encoding) as the attacker's update. */
function uploadPlaintext(m: AgentClient, mTask: Task, edit: (bytes: Uint8Array) => Uint8Array) {
  return m.upload(m.agent.seal(mTask, { plaintext: edit(encodeWeights(constantDelta(mTask.model, 0.5))) }));
}

const rejected = { log: 'update refused', attackerTask: 'rejected' } as const;

const CASES: HostileCase[] = [
  {
    name: 'a tensor renamed',
    code: 'MODEL_WEIGHTS_MISMATCH',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => void (d[2]!.name = 'encoder/evil/kernel')),
  },
  {
    name: 'a tensor named with a path traversal',
    code: 'MODEL_WEIGHTS_MISMATCH',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => void (d[0]!.name = '../../../etc/passwd')),
  },
  {
    name: 'a tensor reshaped (same element count)',
    code: 'MODEL_WEIGHTS_MISMATCH',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => void (d[0]!.shape = [1, d[0]!.data.length])),
  },
  {
    name: 'a tensor missing',
    code: 'MODEL_WEIGHTS_MISMATCH',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => d.slice(1)),
  },
  {
    name: 'an extra tensor (e.g. the site-local metadata head)',
    code: 'MODEL_WEIGHTS_MISMATCH',
    ...rejected,
    act: ({ m, mTask }) =>
      uploadDelta(m, mTask, (d) => [
        ...d,
        { name: 'metadata/dense/kernel', shape: [4, 4], data: new Float32Array(16) },
      ]),
  },
  {
    name: 'a tensor declared float64',
    code: 'CODEC_UNSUPPORTED_DTYPE',
    ...rejected,
    act: ({ m, mTask }) =>
      uploadPlaintext(m, mTask, (bytes) => {
        const text = Buffer.from(bytes).toString('latin1').replace('"float32"', '"float64"');
        return new Uint8Array(Buffer.from(text, 'latin1'));
      }),
  },
  {
    name: 'NaN in a tensor',
    code: 'UPDATE_NOT_FINITE',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => void (d[1]!.data[0] = Number.NaN)),
  },
  {
    name: '+Infinity in a tensor',
    code: 'UPDATE_NOT_FINITE',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => void (d.at(-1)!.data[0] = Number.POSITIVE_INFINITY)),
  },
  {
    name: 'values whose squares overflow float32 (norm computed in float64)',
    code: 'UPDATE_NORM_TOO_LARGE',
    ...rejected,
    act: ({ m, mTask }) => uploadDelta(m, mTask, (d) => void d[0]!.data.fill(3e38)),
  },
  {
    name: 'norm far beyond the run’s bound',
    code: 'UPDATE_NORM_TOO_LARGE',
    ...rejected,
    act: ({ m, mTask }) => m.upload(m.agent.seal(mTask, { delta: constantDelta(mTask.model, 1e5) })),
  },
  {
    name: 'example count zero',
    code: 'UPDATE_EXAMPLE_COUNT_INVALID',
    ...rejected,
    act: ({ m, mTask }) => m.upload(m.agent.seal(mTask, { fields: (f) => void (f.exampleCount = 0) })),
  },
  {
    name: 'example count negative',
    code: 'UPDATE_EXAMPLE_COUNT_INVALID',
    ...rejected,
    act: ({ m, mTask }) => m.upload(m.agent.seal(mTask, { fields: (f) => void (f.exampleCount = -5000) })),
  },
  {
    name: 'example count absurd (would outweigh every honest site)',
    code: 'UPDATE_EXAMPLE_COUNT_INVALID',
    ...rejected,
    act: ({ m, mTask }) => m.upload(m.agent.seal(mTask, { fields: (f) => void (f.exampleCount = 2 ** 52) })),
  },
  {
    name: 'plaintext that is not the weight codec',
    code: 'CODEC_MALFORMED',
    ...rejected,
    act: ({ m, mTask }) => uploadPlaintext(m, mTask, (b) => new Uint8Array(b.length).fill(0x41)),
  },
  {
    name: 'empty plaintext',
    code: 'CODEC_MALFORMED',
    ...rejected,
    act: ({ m, mTask }) => uploadPlaintext(m, mTask, () => new Uint8Array(0)),
  },
  {
    name: 'weight data altered under its codec hash',
    code: 'CODEC_HASH_MISMATCH',
    ...rejected,
    act: ({ m, mTask }) =>
      uploadPlaintext(m, mTask, (b) => {
        const copy = b.slice();
        copy[copy.length - 9]! ^= 0x40;
        return copy;
      }),
  },
  {
    name: 'a second commit racing the first (the first is rejected, the second refused)',
    code: 'UPLOAD_UNKNOWN',
    ...rejected,
    act: async ({ m, mTask }) => {
      const sealed = m.agent.seal(mTask, { delta: constantDelta(mTask.model, 1e5) });
      const begin = await m.begin(sealed);
      if (!begin.ok) return begin;
      for (const [index, data] of sealed.chunks.entries())
        await m.emit('update:chunk', { uploadId: begin.uploadId, index, data });
      const [first, second] = await Promise.all([
        m.emit('update:commit', { uploadId: begin.uploadId }),
        m.emit('update:commit', { uploadId: begin.uploadId }),
      ]);
      return !first.ok && first.error.code === 'UPDATE_NORM_TOO_LARGE' ? second : first;
    },
  },
];

describeHostileTable('hostile update contents (real coordinator, real sockets)', CASES);
