import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import {
  describeCoordinatorKeys,
  generatePartyKeys,
  signCoordinatorKeyAnnouncement,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import type { CoordinatorKeyChain, SignedCoordinatorKeyAnnouncement } from '@fedssl/shared/protocol';
import { initAgentHome, loadAgentConfig, requireEnrolled, saveAgentConfig } from './agent-config';
import { CoordinatorPin } from './coordinator-pin';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const pinOf = (k: PartyKeys) => describeCoordinatorKeys(k.signing.publicKey, k.box.publicKey);

function announce(from: PartyKeys, to: PartyKeys, signer = from): SignedCoordinatorKeyAnnouncement {
  return signCoordinatorKeyAnnouncement(
    {
      previousKeyId: pinOf(from).keyId,
      ...pinOf(to),
      issuedAt: '2026-01-01T00:00:00.000Z',
      previousKeyValidUntil: '2026-01-02T00:00:00.000Z',
    },
    signer.signing.secretKey,
  );
}

/** An enrolled agent home pinned to `coordinator`, and a pin over it whose log lines are kept. */
async function pinnedHome(coordinator: PartyKeys) {
  const home = await mkdtemp(join(tmpdir(), 'fedssl-pin-'));
  dirs.push(home);
  const { config } = await initAgentHome({ home, data: { path: home } });
  await saveAgentConfig(home, {
    ...config,
    siteId: 'site-a',
    siteName: 'A',
    coordinatorUrl: 'http://127.0.0.1:1',
    coordinator: pinOf(coordinator),
  });
  const logged: { level: number; msg: string; [k: string]: unknown }[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => logged.push(JSON.parse(line)) });
  return { home, logged, pin: new CoordinatorPin(home, pinOf(coordinator), logger) };
}

describe('CoordinatorPin', () => {
  it('follows a chain signed by the pinned key, updates the bytes in place and saves config.json', async () => {
    const k0 = generatePartyKeys();
    const k1 = generatePartyKeys();
    const k2 = generatePartyKeys();
    const { home, pin, logged } = await pinnedHome(k0);
    const bytes = pin.bytes;
    const msg: CoordinatorKeyChain = { current: pinOf(k2), chain: [announce(k0, k1), announce(k1, k2)] };
    expect(pin.accept(msg)).toEqual({
      kind: 'followed',
      from: pinOf(k0).keyId,
      to: pinOf(k2).keyId,
      steps: 2,
    });
    expect(pin.bytes).toBe(bytes); // same object the task runner holds
    expect(toBase64(bytes.signingPublicKey)).toBe(pinOf(k2).signingPublicKey);
    expect(toBase64(bytes.boxPublicKey)).toBe(pinOf(k2).boxPublicKey);
    await pin.flushed();
    expect(requireEnrolled(await loadAgentConfig(home)).coordinator).toEqual(pinOf(k2));
    expect(
      logged.find((l) => l.msg === 'following coordinator key rotation (signed by the pinned key)'),
    ).toMatchObject({
      level: 40,
      fromKeyId: pinOf(k0).keyId,
      toKeyId: pinOf(k2).keyId,
    });
    // The same chain again changes nothing.
    expect(pin.accept(msg)).toEqual({ kind: 'unchanged' });
  });

  it('refuses an announcement not signed by the pinned key, logs it at error level, and keeps the pin', async () => {
    const k0 = generatePartyKeys();
    const attacker = generatePartyKeys();
    const { home, pin, logged } = await pinnedHome(k0);
    const forged = announce(k0, attacker, attacker);
    const outcome = pin.accept({ current: pinOf(attacker), chain: [forged] });
    expect(outcome).toMatchObject({ kind: 'refused', code: 'COORDINATOR_KEY_ANNOUNCEMENT_INVALID' });
    expect(toBase64(pin.bytes.signingPublicKey)).toBe(pinOf(k0).signingPublicKey);
    await pin.flushed();
    expect(requireEnrolled(await loadAgentConfig(home)).coordinator).toEqual(pinOf(k0));
    const loud = logged.filter((l) => l.level >= 50);
    expect(loud).toHaveLength(1);
    expect(loud[0]).toMatchObject({
      code: 'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
      pinnedKeyId: pinOf(k0).keyId,
      presentedKeyId: pinOf(attacker).keyId,
    });
    expect(loud[0]!.msg).toMatch(/^REFUSED coordinator key announcement: /);
  });

  it('refuses a coordinator presenting a key no signed announcement leads to (e.g. a re-keyed impostor)', async () => {
    const k0 = generatePartyKeys();
    const other = generatePartyKeys();
    const { pin, logged } = await pinnedHome(k0);
    expect(pin.accept({ current: pinOf(other), chain: [] })).toEqual({
      kind: 'refused',
      code: 'COORDINATOR_KEY_ANNOUNCEMENT_INVALID',
      message: `coordinator key ${pinOf(other).keyId} is not reachable from the pinned key ${pinOf(k0).keyId}`,
    });
    expect(logged.some((l) => l.level >= 50)).toBe(true);
    expect(pin.accept({ nonsense: true })).toMatchObject({
      kind: 'refused',
      code: 'PROTOCOL_INVALID_MESSAGE',
    });
    expect(toBase64(pin.bytes.signingPublicKey)).toBe(pinOf(k0).signingPublicKey);
  });
});
