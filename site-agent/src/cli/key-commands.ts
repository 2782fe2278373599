import { randomBytes } from 'node:crypto';
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  fingerprint,
  generatePartyKeys,
  keyId,
  signSiteKeyRotation,
  toBase64,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import { FedsslError } from '@fedssl/shared/errors';
import type { SiteKeyRotationResponse } from '@fedssl/shared/protocol';
import {
  agentPaths,
  decodeKeysFile,
  encodeKeysFile,
  loadAgentConfig,
  loadPartyKeys,
  requireEnrolled,
} from '../config/agent-config';
import { exists, writeSecureFile } from '../config/secure-files';
import { retry } from '../uplink/backoff';
import { asCodedError } from '../uplink/uplink';
import { coordinatorUnreachable } from './fetch-failure';
import { keyRotationAnswer } from './rest-answers';
import { errorFromResponse, type CliIo } from './commands';

/**
 * Key commands: `rotate-keys` (new site keys, registered with a request signed by the old
 * and the new key) and `show-coordinator` (the pinned coordinator key, to compare out of band).
 */

/** New keys waiting to be registered: kept so an interrupted rotation resumes with the same keys. */
export function nextKeysPath(home: string): string {
  return join(agentPaths(home).home, 'keys.next.json');
}

export interface RotateKeysCommandOptions {
  home: string;
  fetchImpl?: typeof fetch;
  /** Clock for `issuedAt` (tests). */
  now?: () => number;
}

/**
 * `fedssl-agent rotate-keys`: generates new signing and box keys, registers them with the
 * coordinator (request signed by the current key and by the new one), then replaces
 * keys.json. The coordinator accepts the old key for its grace period, so a running agent
 * keeps working until it is restarted. If anything fails before the coordinator answered,
 * running the command again resumes with the same new keys.
 */
export async function rotateKeysCommand(opts: RotateKeysCommandOptions, io: CliIo): Promise<number> {
  const config = requireEnrolled(await loadAgentConfig(opts.home));
  const current = await loadPartyKeys(opts.home);
  const pending = nextKeysPath(opts.home);
  let next: PartyKeys;
  if (await exists(pending)) {
    next = decodeKeysFile(await readFile(pending, 'utf8'), pending);
    io.err(`Resuming an interrupted rotation to key ${keyId(next.signing.publicKey)}.`);
  } else {
    next = generatePartyKeys();
    await writeSecureFile(pending, encodeKeysFile(next));
  }
  const signed = signSiteKeyRotation(
    {
      siteId: config.siteId,
      previousKeyId: keyId(current.signing.publicKey),
      signingPublicKey: toBase64(next.signing.publicKey),
      boxPublicKey: toBase64(next.box.publicKey),
      issuedAt: new Date((opts.now ?? Date.now)()).toISOString(),
      nonce: toBase64(randomBytes(32)),
    },
    current.signing.secretKey,
    next.signing.secretKey,
  );
  const url = `${config.coordinatorUrl}/api/v1/sites/${encodeURIComponent(config.siteId)}/keys/rotate`;
  const doFetch = opts.fetchImpl ?? fetch;
  const res = await retry(
    async () => {
      try {
        return await doFetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(signed),
        });
      } catch (e) {
        throw coordinatorUnreachable(config.coordinatorUrl ?? url, e);
      }
    },
    { attempts: 3, isRetryable: (e) => asCodedError(e)?.code === 'COORDINATOR_UNREACHABLE' },
  );
  if (!res.ok) {
    // A refusal is final for these new keys: forget them so the next attempt starts clean.
    if (res.status < 500) await rm(pending, { force: true });
    throw await errorFromResponse(res, 'key rotation', 'SITE_KEY_ROTATION_INVALID');
  }
  const parsed = keyRotationAnswer.safeParse(await res.json());
  if (!parsed.success || parsed.data.keyId !== keyId(next.signing.publicKey)) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `coordinator sent a malformed key rotation answer; run rotate-keys again (the new keys are kept in ${pending})`,
    );
  }
  // The coordinator holds the new key now: make it this site's key (atomic rename).
  await rename(pending, agentPaths(opts.home).keys);
  printRotation(parsed.data, next, io);
  return 0;
}

function printRotation(r: SiteKeyRotationResponse, next: PartyKeys, io: CliIo): void {
  io.out(`Site key rotated:      ${r.previousKeyId} -> ${r.keyId}`);
  io.out(`Site key fingerprint:  ${fingerprint(next.signing.publicKey, next.box.publicKey)}`);
  io.out(`Old key accepted until ${r.previousKeyValidUntil}.`);
  io.out('Restart the agent (fedssl-agent run) before then so it signs with the new key.');
}

/**
 * `fedssl-agent show-coordinator`: the coordinator key this agent trusts now (pinned at
 * enrollment, or followed through signed rotations since). The fingerprint is the same
 * string `fedssl-coordinator fingerprint` prints on the coordinator host.
 */
export async function showCoordinatorCommand(
  opts: { home: string; json?: boolean },
  io: CliIo,
): Promise<number> {
  const config = requireEnrolled(await loadAgentConfig(opts.home));
  if (opts.json) {
    io.out(
      JSON.stringify(
        { coordinatorUrl: config.coordinatorUrl, siteId: config.siteId, ...config.coordinator },
        null,
        2,
      ),
    );
    return 0;
  }
  io.out(`Coordinator:              ${config.coordinatorUrl}`);
  io.out(`Site:                     ${config.siteId} (${config.siteName})`);
  io.out(`Coordinator key id:       ${config.coordinator.keyId}`);
  io.out(`Coordinator fingerprint:  ${config.coordinator.fingerprint}`);
  return 0;
}
