import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { decodeWeights } from '@fedssl/shared/codec';
import { sha256Hex, verifySignedModelManifest } from '@fedssl/shared/crypto';
import type { Ack, SignedModelManifest } from '@fedssl/shared/protocol';
import { testRunBody } from '../runs/federation.fixture';
import type { RestClient } from '../testing/rest-client';
import { SocketAgents, sealDelta, sendUpload } from '../testing/socket-agents';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

/**
 * The federation path end to end over real sockets: enrollment over HTTP, challenge auth,
 * task offer, chunked model download, chunked sealed upload, aggregation and publication.
 */
describe('federation over socket.io (whole coordinator on port 0)', () => {
  let c: TestCoordinator;
  let admin: string;
  let rest: RestClient;
  let agents: SocketAgents;

  beforeAll(async () => {
    c = await startTestCoordinator({ prefix: 'fedssl-fed-e2e-' });
    admin = await c.token('admin');
    rest = c.rest(admin);
    agents = new SocketAgents(c.url, rest);
  });
  afterAll(async () => {
    agents.closeAll();
    await c.close();
  });

  it('runs a round with two agents and publishes the FedAvg of their uploads', async () => {
    const run = await rest.ok('POST', '/runs', testRunBody({ rounds: 1, minSites: 2 }));
    const runId = run.id as string;
    await rest.ok('POST', `/runs/${runId}/start`);
    const sites = [await agents.enroll('Hospital A'), await agents.enroll('Hospital B')];
    const values = [0.25, -0.05];
    const counts = [30, 10];

    await Promise.all(
      sites.map(async (a, i) => {
        const task = await a.task;
        // Download the global model in chunks and check it against the signed manifest.
        const sm = (await a.socket.emitWithAck('model:manifest', {
          version: task.modelVersion,
        })) as Ack<SignedModelManifest>;
        if (!sm.ok) throw new Error(sm.error.message);
        const manifest = verifySignedModelManifest(
          { manifest: sm.manifest, signature: sm.signature, keyId: sm.keyId },
          a.pinned.signing,
        );
        const parts: Uint8Array[] = [];
        for (let off = 0; off < manifest.weightsBytes; off += 4096) {
          const r = (await a.socket.emitWithAck('model:chunk', {
            version: task.modelVersion,
            offset: off,
            length: Math.min(4096, manifest.weightsBytes - off),
          })) as Ack<{ data: Uint8Array }>;
          if (!r.ok) throw new Error(r.error.message);
          parts.push(new Uint8Array(r.data));
        }
        const weights = Buffer.concat(parts);
        expect(sha256Hex(weights)).toBe(task.modelHash);
        decodeWeights(weights);

        const sealed = sealDelta(a, task, {
          boxPublicKey: a.pinned.box,
          value: values[i]!,
          exampleCount: counts[i]!,
          metrics: { loss: 0.5 },
          chunkSize: 2048,
        });
        const { uploadId, nextIndexes } = await sendUpload(a.socket, sealed);
        expect(nextIndexes).toEqual(sealed.chunks.map((_, idx) => idx + 1));
        const commit = (await a.socket.emitWithAck('update:commit', { uploadId })) as Ack<{
          accepted: true;
          updateId: string;
        }>;
        if (!commit.ok) throw new Error(`${commit.error.code}: ${commit.error.message}`);
        expect(commit.accepted).toBe(true);
      }),
    );

    const detail = await rest.ok('GET', `/runs/${runId}`);
    expect(detail.state).toBe('completed');
    const rounds = detail.rounds as {
      state: string;
      participants: { siteId: string; state: string; exampleCount: number }[];
    }[];
    expect(rounds[0]!.state).toBe('published');
    expect(rounds[0]!.participants.map((p) => [p.state, p.exampleCount]).sort()).toEqual([
      ['accepted', 10],
      ['accepted', 30],
    ]);

    const res0 = await fetch(`${c.url}/api/v1/models/${runId}.r0/weights`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    const res1 = await fetch(`${c.url}/api/v1/models/${runId}.r1/weights`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    const w0 = decodeWeights(new Uint8Array(await res0.arrayBuffer())).tensors;
    const w1 = decodeWeights(new Uint8Array(await res1.arrayBuffer())).tensors;
    const expected = (30 * 0.25 + 10 * -0.05) / 40;
    for (const [t, tensor] of w1.entries())
      expect(tensor.data[0]! - w0[t]!.data[0]!).toBeCloseTo(expected, 5);
  });
});
