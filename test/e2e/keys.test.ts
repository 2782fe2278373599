import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { keyId, toBase64 } from '@fedssl/shared/crypto';
import { AdminTokenService } from '../../coordinator/src/admin/admin-token.service';
import { CoordinatorKeysService } from '../../coordinator/src/keys/coordinator-keys.service';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/src/main';
import { EnrollmentService } from '../../coordinator/src/sites/enrollment.service';
import { SiteRegistryService } from '../../coordinator/src/sites/site-registry.service';
import { RestClient } from '../../coordinator/src/testing/rest-client';
import { enrollCommand, initCommand, type CliIo } from '../../site-agent/src/cli/commands';
import { runDoctor } from '../../site-agent/src/cli/doctor';
import {
  nextKeysPath,
  rotateKeysCommand,
  showCoordinatorCommand,
} from '../../site-agent/src/cli/key-commands';
import {
  agentPaths,
  loadAgentConfig,
  loadPartyKeys,
  requireEnrolled,
} from '../../site-agent/src/config/agent-config';
import { CoordinatorPin } from '../../site-agent/src/config/coordinator-pin';
import { CoordinatorClient } from '../../site-agent/src/uplink/coordinator-client';

/**
 * Keys and identity against a live in-process coordinator, with the agent's own commands
 * and its real socket.io client: fingerprint checked at enrollment, site key rotation with a
 * grace period, and coordinator key rotation followed by connected and reconnecting agents.
 */
describe('keys and identity (in-process coordinator, agent commands and client)', () => {
  let root: string;
  let coordinator: RunningCoordinator;
  let admin: string;
  // The platform clock (registry, keys, tokens); advanced to end grace periods without sleeping.
  const clock = { t: Date.now(), now: () => clock.t };
  const logger = pino({ level: 'silent' });
  const clients: CoordinatorClient[] = [];

  const capture = (): CliIo & { lines: string[] } => {
    const lines: string[] = [];
    return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l) };
  };

  const http = (method: string, p: string, body?: unknown) =>
    new RestClient(`${coordinator.url}/api/v1`, admin).call(method, p, { body });

  /** An initialised and enrolled agent home. */
  async function enrolledAgent(name: string): Promise<string> {
    const home = path.join(root, name);
    await initCommand({ home, data: path.join(root, 'data') }, capture());
    const issued = await coordinator.app.get(EnrollmentService).issueToken(name, 600);
    await enrollCommand({ home, coordinator: coordinator.url, token: issued.token }, capture());
    return home;
  }

  /** The agent's real client for `home`, with its current keys. */
  async function client(home: string): Promise<CoordinatorClient> {
    const config = requireEnrolled(await loadAgentConfig(home));
    const keys = await loadPartyKeys(home);
    const c = new CoordinatorClient({
      url: config.coordinatorUrl,
      siteId: config.siteId,
      signingSecretKey: keys.signing.secretKey,
      agentVersion: 'test',
      logger,
      backoff: { initialMs: 10, maxMs: 50, factor: 2, jitter: 0 },
    });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-keys-e2e-'));
    coordinator = await startCoordinator(
      {
        host: '127.0.0.1',
        port: 0,
        dataDir: path.join(root, 'coordinator'),
        databaseUrl: null,
        logLevel: 'silent',
        keyGraceSeconds: 3600,
      },
      logger,
      { clock },
    );
    admin = (await coordinator.app.get(AdminTokenService).create('admin', 'admin')).token;
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  afterAll(async () => {
    await coordinator?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('enroll --expect-fingerprint pins only the expected coordinator; show-coordinator prints the same fingerprint', async () => {
    const fp = coordinator.app.get(CoordinatorKeysService).publicKeys().fingerprint;
    const home = path.join(root, 'fp-agent');
    await initCommand({ home, data: path.join(root, 'data') }, capture());
    const enrollment = coordinator.app.get(EnrollmentService);
    const token = (await enrollment.issueToken('Fp site', 600)).token;
    const wrong = 'ffff '.repeat(16).trim();
    await expect(
      enrollCommand(
        {
          home,
          coordinator: coordinator.url,
          token,
          expectFingerprint: wrong,
        },
        capture(),
      ),
    ).rejects.toMatchObject({
      code: 'COORDINATOR_FINGERPRINT_MISMATCH',
      message: `the coordinator's fingerprint is ${fp}, not the expected ${wrong}; nothing was sent and the token is still valid. Check the URL and ask the consortium admin`,
    });
    expect((await loadAgentConfig(home)).coordinator).toBeNull();
    // Nothing was spent: the same token enrolls once the right fingerprint is given.

    const io = capture();
    // Case and spacing do not matter when IT types what the admin read out.
    const typed = fp.replace(/ /g, '').toUpperCase();
    await enrollCommand(
      {
        home,
        coordinator: coordinator.url,
        token,
        expectFingerprint: typed,
      },
      io,
    );
    expect(io.lines).toContain(`Coordinator fingerprint:  ${fp}`);
    expect(io.lines).toContain('The fingerprint matches the one you expected.');
    const shown = capture();
    expect(await showCoordinatorCommand({ home }, shown)).toBe(0);
    expect(shown.lines).toContain(`Coordinator fingerprint:  ${fp}`);
  });

  it('rotate-keys registers new site keys; the old key authenticates during the grace period and is refused by name after it', async () => {
    const home = await enrolledAgent('Rotating site');
    const siteId = requireEnrolled(await loadAgentConfig(home)).siteId;
    const oldKeys = await loadPartyKeys(home);
    const oldClient = await client(home); // holds the old secret key, like a running agent

    const io = capture();
    expect(await rotateKeysCommand({ home, now: clock.now }, io)).toBe(0);
    const newKeys = await loadPartyKeys(home);
    expect(newKeys.signing.publicKey).not.toEqual(oldKeys.signing.publicKey);
    expect(existsSync(nextKeysPath(home))).toBe(false);
    const validUntil = new Date(clock.t + 3600_000).toISOString();
    expect(io.lines).toEqual([
      `Site key rotated:      ${keyId(oldKeys.signing.publicKey)} -> ${keyId(newKeys.signing.publicKey)}`,
      expect.stringMatching(/^Site key fingerprint: {2}([0-9a-f]{4} ){15}[0-9a-f]{4}$/),
      `Old key accepted until ${validUntil}.`,
      'Restart the agent (fedssl-agent run) before then so it signs with the new key.',
    ]);
    const site = await coordinator.app.get(SiteRegistryService).require(siteId);
    expect(site.signingPublicKey).toBe(toBase64(newKeys.signing.publicKey));
    const listed = await http('GET', `/sites/${siteId}/keys`);
    expect(
      (listed.body as unknown as { keyId: string; status: string }[]).map((k) => [k.keyId, k.status]),
    ).toEqual([
      [keyId(oldKeys.signing.publicKey), 'grace'],
      [keyId(newKeys.signing.publicKey), 'current'],
    ]);

    // Grace period: the running agent's old key still authenticates.
    oldClient.connect();
    await oldClient.ready();
    oldClient.close();
    // After it: refused with a coded error naming the key; the new key is accepted.
    clock.t += 3600_000;
    const late = await client(home); // the new keys, from disk
    const stale = new CoordinatorClient({
      url: coordinator.url,
      siteId,
      signingSecretKey: oldKeys.signing.secretKey,
      agentVersion: 'test',
      logger,
    });
    clients.push(stale);
    stale.connect();
    await expect(stale.ready()).rejects.toMatchObject({
      code: 'SITE_KEY_EXPIRED',
      message: expect.stringContaining(`signed with key ${keyId(oldKeys.signing.publicKey)}`),
    });
    late.connect();
    await late.ready();
  });

  it('agents follow a coordinator key rotation: live over the socket, and at the next authentication', async () => {
    const keys = coordinator.app.get(CoordinatorKeysService);
    const live = await enrolledAgent('Live follower');
    const later = await enrolledAgent('Late follower');
    const before = keys.publicKeys();

    const liveConfig = requireEnrolled(await loadAgentConfig(live));
    const pin = new CoordinatorPin(live, liveConfig.coordinator, logger);
    const c = await client(live);
    const announced = new Promise<unknown>((resolve) => {
      let n = 0;
      c.socket.on('keys:announce', (msg) => {
        const outcome = pin.accept(msg);
        if (++n === 2) resolve(outcome); // the first one comes with authentication
      });
    });
    c.connect();
    await c.ready();
    expect(pin.keys).toEqual(before);

    const rotated = await http('POST', '/coordinator/keys/rotate', {});
    expect(rotated.status).toBe(200);
    const after = keys.publicKeys();
    expect(rotated.body).toMatchObject({ previousKeyId: before.keyId, keyId: after.keyId });
    expect(await announced).toEqual({ kind: 'followed', from: before.keyId, to: after.keyId, steps: 1 });
    expect(pin.keys).toEqual(after);
    expect(toBase64(pin.bytes.signingPublicKey)).toBe(after.signingPublicKey);
    await pin.flushed();
    expect(requireEnrolled(await loadAgentConfig(live)).coordinator).toEqual(after);
    const shown = capture();
    await showCoordinatorCommand({ home: live }, shown);
    expect(shown.lines).toContain(`Coordinator fingerprint:  ${after.fingerprint}`);

    // Before it reconnects, doctor sees the rotation and that the pinned key signed the way there.
    const doctor = (await runDoctor({ home: later, logger, backend: 'cpu' })).find(
      (c) => c.name === 'coordinator keys match the pinned ones',
    );
    expect(doctor).toMatchObject({
      status: 'warn',
      detail: `the coordinator rotated its keys (pinned ${before.keyId} -> ${after.keyId}, 1 announcement(s) signed by the pinned key); the agent follows on its next connection`,
    });

    // An agent that was offline follows the chain when it next authenticates.
    const laterPin = new CoordinatorPin(
      later,
      requireEnrolled(await loadAgentConfig(later)).coordinator,
      logger,
    );
    const lc = await client(later);
    const first = new Promise<unknown>((resolve) =>
      lc.socket.once('keys:announce', (m) => resolve(laterPin.accept(m))),
    );
    lc.connect();
    expect(await first).toEqual({ kind: 'followed', from: before.keyId, to: after.keyId, steps: 1 });
    await laterPin.flushed();
    expect(JSON.parse(await readFile(agentPaths(later).config, 'utf8')).coordinator).toEqual(after);

    // The public chain endpoint serves the same chain, and the history lists both keys.
    const chain = await fetch(`${coordinator.url}/api/v1/coordinator/keys/chain`).then((r) => r.json());
    expect(chain).toEqual(keys.keyChain());
    const history = await http('GET', '/coordinator/keys/history');
    expect(
      (history.body as unknown as { keyId: string; status: string }[]).map((k) => [k.keyId, k.status]),
    ).toEqual([
      [before.keyId, 'grace'],
      [after.keyId, 'current'],
    ]);
  });
});
