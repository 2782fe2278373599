import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex, verifySignedModelManifest, fromBase64 } from '@fedssl/shared/crypto';
import type { CoordinatorKeys, SignedModelManifest } from '@fedssl/shared/protocol';
import {
  BINS,
  enrollAgent,
  generateSyntheticScans,
  runNode,
  startAgent,
  startCoordinator,
  startNode,
  waitForRun,
  type AgentHandle,
  type CoordinatorHandle,
  type ManagedProcess,
  type RunView,
} from '@fedssl/demo';
import { decodeWeights } from '@fedssl/shared/codec';
import { modelConfigSchema, sharedParamSpecs } from '@fedssl/shared/model';
import { openUpdate } from '@fedssl/shared/crypto';
import type { UpdateHeader } from '@fedssl/shared/protocol';
import { startWireProxy, type WireProxy } from '../support/wire-proxy';
import { decodeSentEvents } from '../support/socketio-frames';
import { twoRoundRun } from '../support/scenario';

/**
 * The spine, end to end, with every party a real process on 127.0.0.1: a coordinator, two
 * honest site agents (one of them talking through a recording proxy, so the test sees every
 * byte it sends), a third agent whose upload is altered in flight by a proxy, and a fourth
 * process holding a key the coordinator never enrolled.
 */
describe('federated BYOL round, end to end', () => {
  let root: string;
  let coordinator: CoordinatorHandle;
  let proxy: WireProxy;
  let audit: WireProxy;
  const agents: AgentHandle[] = [];
  const processes: ManagedProcess[] = [];
  let run: RunView;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-e2e-'));
    coordinator = await startCoordinator({ dataDir: path.join(root, 'coordinator') });
    processes.push(coordinator.process);
    const target = new URL(coordinator.url);
    const upstream = { host: target.hostname, port: Number(target.port) };
    proxy = await startWireProxy(upstream, { tamperFirstBinaryFrameOver: 1024 });
    audit = await startWireProxy(upstream);

    for (const [i, name] of ['alpha', 'beta', 'tampered'].entries()) {
      const dataPath = path.join(root, 'data', name);
      await generateSyntheticScans({
        outDir: dataPath,
        patients: 6,
        imagesPerPatient: 3,
        size: 48,
        seed: 50 + i,
        modality: 'ultrasound',
      });
      const agent = await enrollAgent({ coordinator, name, home: path.join(root, 'agents', name), dataPath });
      agents.push(agent);
    }
    // From now on the first site talks through the recording proxy, the third through the
    // tampering one.
    for (const [agent, via] of [
      [agents[0]!, audit],
      [agents[2]!, proxy],
    ] as const) {
      const file = path.join(agent.home, 'config.json');
      const cfg = JSON.parse(await readFile(file, 'utf8')) as { coordinatorUrl: string };
      cfg.coordinatorUrl = via.url;
      await writeFile(file, JSON.stringify(cfg, null, 2), { mode: 0o600 });
    }

    for (const agent of agents) processes.push(await startAgent(agent));

    const created = await coordinator.api.createRun(twoRoundRun('e2e'));
    await coordinator.api.startRun(created.id);
    run = await waitForRun(coordinator.api, created.id, { timeoutMs: 240_000 });
  }, 400_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await proxy?.close();
    await audit?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('completes two rounds and publishes a new global model each round', () => {
    expect(run.state).toBe('completed');
    const published = run.rounds.filter((r) => r.state === 'published');
    expect(published.map((r) => r.round)).toEqual([1, 2]);
    const hashes = published.map((r) => r.modelSha256);
    expect(new Set(hashes).size).toBe(2);
  });

  it('records both honest sites with their example counts in every round', () => {
    for (const round of run.rounds.filter((r) => r.state === 'published')) {
      for (const agent of agents.slice(0, 2)) {
        const p = round.participants.find((x) => x.siteId === agent.siteId);
        expect(p, `${agent.name} in round ${round.round}`).toBeDefined();
        expect(p!.state).toBe('accepted');
        expect(p!.exampleCount).toBe(18);
      }
    }
  });

  it('rejects the update altered in flight, and the round completes from the others', () => {
    expect(proxy.tampered).toBe(1);
    const round1 = run.rounds.find((r) => r.round === 1 && r.state === 'published')!;
    const victim = round1.participants.find((p) => p.siteId === agents[2]!.siteId)!;
    expect(victim.state).toBe('rejected');
    expect(victim.reason).toMatch(/^ENVELOPE_/);
    // Only the proxy's first alteration: in round 2 the same site's honest upload is accepted.
    const round2 = run.rounds.find((r) => r.round === 2 && r.state === 'published')!;
    expect(round2.participants.find((p) => p.siteId === agents[2]!.siteId)!.state).toBe('accepted');
  });

  it('publishes models whose signature and hash verify against the coordinator key', async () => {
    const keys = (await (
      await fetch(`${coordinator.url}/api/v1/coordinator/keys`)
    ).json()) as CoordinatorKeys;
    for (const round of run.rounds.filter((r) => r.state === 'published')) {
      const signed = await coordinator.api.request<SignedModelManifest>(
        'GET',
        `/models/${round.modelVersion}`,
      );
      const manifest = verifySignedModelManifest(signed, fromBase64(keys.signingPublicKey, 32));
      const res = await fetch(`${coordinator.url}/api/v1/models/${round.modelVersion}/weights`, {
        headers: { authorization: `Bearer ${coordinator.adminToken}` },
      });
      const weights = new Uint8Array(await res.arrayBuffer());
      expect(sha256Hex(weights)).toBe(manifest.weightsSha256);
      expect(manifest.round).toBe(round.round);
    }
  });

  it('pulls the final model with fedssl-admin, verified against the pinned fingerprint', async () => {
    const keys = (await (
      await fetch(`${coordinator.url}/api/v1/coordinator/keys`)
    ).json()) as CoordinatorKeys;
    const out = path.join(root, 'pulled');
    await runNode(
      BINS.admin,
      [
        'models',
        'pull',
        '--version',
        run.latestModelVersion!,
        '--out',
        out,
        '--fingerprint',
        keys.fingerprint,
      ],
      {
        FEDSSL_URL: coordinator.url,
        FEDSSL_ADMIN_TOKEN: coordinator.adminToken,
      },
    );
    const manifest = JSON.parse(
      await readFile(path.join(out, 'manifest.json'), 'utf8'),
    ) as SignedModelManifest;
    expect(sha256Hex(new Uint8Array(await readFile(path.join(out, 'weights.fsw'))))).toBe(
      manifest.manifest.weightsSha256,
    );
  });

  it('refuses a process that presents a site id with a key the coordinator never enrolled', async () => {
    const home = path.join(root, 'agents', 'impostor');
    await runNode(BINS.agent, ['init', '--home', home, '--data', path.join(root, 'data', 'alpha')]);
    // Claim to be site alpha: same config (site id, pinned coordinator keys), but a fresh key pair.
    await cp(path.join(agents[0]!.home, 'config.json'), path.join(home, 'config.json'));
    const impostor = startNode('impostor', BINS.agent, ['run', '--home', home], { FEDSSL_LOG_LEVEL: 'info' });
    processes.push(impostor);
    const exit = await impostor.onExit();
    expect(exit.code).not.toBe(0);
    expect(impostor.tail(50)).toMatch(/SITE_AUTH_FAILED/);
    await coordinator.process.waitForLine(
      (l) => String(l.code ?? '') === 'SITE_AUTH_FAILED',
      'the refusal log line',
      10_000,
    );
  });

  it('sends nothing but the declared shared tensors: no patient id, no metadata head, no target network', async () => {
    const events = decodeSentEvents(audit.frames);
    const allowed = [
      'auth:response',
      'status',
      'model:manifest',
      'model:chunk',
      'task:progress',
      'update:begin',
      'update:chunk',
      'update:commit',
    ];
    expect(events.length).toBeGreaterThan(0);
    expect(events.filter((e) => !allowed.includes(e.name)).map((e) => e.name)).toEqual([]);

    // No raw patient identifier from the site's manifest appears anywhere in what it sent.
    const manifestCsv = await readFile(path.join(root, 'data', 'alpha', 'manifest.csv'), 'utf8');
    const patientIds = [
      ...new Set(
        manifestCsv
          .trim()
          .split('\n')
          .slice(1)
          .map((l) => l.split(',')[1]!),
      ),
    ];
    expect(patientIds.length).toBe(6);
    const sent = Buffer.concat(audit.frames.map((f) => f.payload));
    for (const id of patientIds) expect(sent.includes(Buffer.from(id)), id).toBe(false);

    // Every upload, opened with the coordinator's key, holds exactly the shared tensors.
    const keyFile = JSON.parse(
      await readFile(path.join(root, 'coordinator', 'keys', 'coordinator-keys.json'), 'utf8'),
    ) as {
      keys: { boxSecretKey: string }[];
    };
    // The keyring's last entry is the current key (no rotation in this run).
    const boxSecretKey = keyFile.keys.at(-1)!.boxSecretKey;
    const sites = await coordinator.api.listSites();
    const alphaKey = sites.find((x) => x.id === agents[0]!.siteId)!.signingPublicKey;
    const model = modelConfigSchema.parse(twoRoundRun('e2e').model);
    const expected = sharedParamSpecs(model).map((t) => ({ name: t.name, shape: t.shape }));
    expect(expected.some((t) => t.name.startsWith('metadata_head'))).toBe(false);
    const uploads: { header: UpdateHeader; signature: string; chunks: Uint8Array[] }[] = [];
    for (const e of events) {
      const msg = e.args[0] as {
        header?: UpdateHeader;
        signature?: string;
        index?: number;
        data?: Uint8Array;
      };
      if (e.name === 'update:begin')
        uploads.push({ header: msg.header!, signature: msg.signature!, chunks: [] });
      if (e.name === 'update:chunk') uploads.at(-1)!.chunks[msg.index!] = msg.data!;
    }
    expect(uploads.map((u) => u.header.round)).toEqual([1, 2]);
    for (const u of uploads) {
      const plaintext = openUpdate({
        ...u,
        siteSigningPublicKey: fromBase64(alphaKey, 32),
        coordinatorBoxSecretKey: fromBase64(boxSecretKey, 32),
      });
      const { tensors } = decodeWeights(plaintext, expected);
      expect(tensors.map((t) => t.name)).toEqual(expected.map((t) => t.name));
    }
  });
});
