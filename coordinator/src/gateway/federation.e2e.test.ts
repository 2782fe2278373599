import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { io, type Socket } from 'socket.io-client';
import { decodeWeights, encodeWeights } from '@fedssl/shared/codec';
import {
  fromBase64,
  generatePartyKeys,
  sealUpdate,
  sha256Hex,
  signBytes,
  toBase64,
  verifySignedModelManifest,
  verifySignedTask,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  authChallengeBytes,
  type Ack,
  type AuthChallenge,
  type SignedModelManifest,
  type SignedTask,
  type Task,
} from '@fedssl/shared/protocol';
import { AdminTokenService } from '../admin/admin-token.service';
import { startCoordinator, type RunningCoordinator } from '../main';
import { constantDelta, testRunBody } from '../runs/federation.fixture';

/**
 * The federation path end to end over real sockets: enrollment over HTTP, challenge auth,
 * task offer, chunked model download, chunked sealed upload, aggregation and publication.
 */
describe('federation over socket.io (whole coordinator on port 0)', () => {
  let c: RunningCoordinator;
  let dataDir: string;
  let admin: string;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'fedssl-fed-e2e-'));
    c = await startCoordinator(
      { host: '127.0.0.1', port: 0, dataDir, databaseUrl: null, logLevel: 'silent' },
      pino({ level: 'silent' }),
    );
    admin = (await c.app.get(AdminTokenService).create('admin', 'admin')).token;
  });
  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await c.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function http(method: string, path: string, body?: unknown, token: string | null = admin) {
    const res = await fetch(`${c.url}/api/v1${path}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.status >= 300) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Enrolls a site over HTTP and connects + authenticates its agent; resolves on its first task. */
  async function agent(name: string): Promise<{
    siteId: string;
    keys: PartyKeys;
    coord: { signing: Uint8Array; box: Uint8Array };
    socket: Socket;
    task: Promise<Task>;
  }> {
    const tok = await http('POST', '/enrollment-tokens', { siteName: name });
    const keys = generatePartyKeys();
    const enrolled = await http(
      'POST',
      '/enroll',
      {
        token: tok.token,
        signingPublicKey: toBase64(keys.signing.publicKey),
        boxPublicKey: toBase64(keys.box.publicKey),
        agentVersion: 't',
        protocolVersion: PROTOCOL_VERSION,
      },
      null,
    );
    const siteId = enrolled.siteId as string;
    const ck = enrolled.coordinator as { signingPublicKey: string; boxPublicKey: string };
    const coord = { signing: fromBase64(ck.signingPublicKey, 32), box: fromBase64(ck.boxPublicKey, 32) };
    const socket = io(`${c.url}${AGENT_NAMESPACE}`, {
      auth: { siteId, protocolVersion: PROTOCOL_VERSION, agentVersion: 't' },
      transports: ['websocket'],
      reconnection: false,
    });
    sockets.push(socket);
    const task = new Promise<Task>((resolve) =>
      socket.on('task:offer', (st: SignedTask, ack: (r: Ack) => void) => {
        const t = verifySignedTask(st, coord.signing);
        ack({ ok: true });
        resolve(t);
      }),
    );
    socket.once('auth:challenge', (ch: AuthChallenge) =>
      socket.emit('auth:response', {
        signature: signBytes(authChallengeBytes(ch.nonce, siteId), keys.signing.secretKey),
      }),
    );
    await new Promise((resolve) => socket.once('auth:ok', resolve));
    return { siteId, keys, coord, socket, task };
  }

  it('runs a round with two agents and publishes the FedAvg of their uploads', async () => {
    const run = await http('POST', '/runs', testRunBody({ rounds: 1, minSites: 2 }));
    const runId = run.id as string;
    await http('POST', `/runs/${runId}/start`);
    const agents = [await agent('Hospital A'), await agent('Hospital B')];
    const values = [0.25, -0.05];
    const counts = [30, 10];

    await Promise.all(
      agents.map(async (a, i) => {
        const task = await a.task;
        // Download the global model in chunks and check it against the signed manifest.
        const sm = (await a.socket.emitWithAck('model:manifest', {
          version: task.modelVersion,
        })) as Ack<SignedModelManifest>;
        if (!sm.ok) throw new Error(sm.error.message);
        const manifest = verifySignedModelManifest(
          { manifest: sm.manifest, signature: sm.signature, keyId: sm.keyId },
          a.coord.signing,
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

        const sealed = sealUpdate({
          plaintext: encodeWeights(constantDelta(task.model, values[i]!)),
          fields: {
            protocolVersion: PROTOCOL_VERSION,
            siteId: a.siteId,
            runId: task.runId,
            round: task.round,
            taskId: task.taskId,
            taskNonce: task.nonce,
            baseModelHash: task.modelHash,
            exampleCount: counts[i]!,
            metrics: { loss: 0.5 },
            createdAt: new Date().toISOString(),
          },
          chunkSize: 2048,
          siteSigningSecretKey: a.keys.signing.secretKey,
          coordinatorBoxPublicKey: a.coord.box,
        });
        const begin = (await a.socket.emitWithAck('update:begin', {
          header: sealed.header,
          signature: sealed.signature,
        })) as Ack<{ uploadId: string; nextIndex: number }>;
        if (!begin.ok) throw new Error(begin.error.message);
        for (let idx = 0; idx < sealed.chunks.length; idx++) {
          const r = (await a.socket.emitWithAck('update:chunk', {
            uploadId: begin.uploadId,
            index: idx,
            data: sealed.chunks[idx],
          })) as Ack<{ nextIndex: number }>;
          if (!r.ok) throw new Error(r.error.message);
          expect(r.nextIndex).toBe(idx + 1);
        }
        const commit = (await a.socket.emitWithAck('update:commit', { uploadId: begin.uploadId })) as Ack<{
          accepted: true;
          updateId: string;
        }>;
        if (!commit.ok) throw new Error(`${commit.error.code}: ${commit.error.message}`);
        expect(commit.accepted).toBe(true);
      }),
    );

    const detail = await http('GET', `/runs/${runId}`);
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
