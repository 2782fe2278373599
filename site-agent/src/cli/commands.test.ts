import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import {
  describeCoordinatorKeys,
  fingerprint,
  fromBase64,
  generatePartyKeys,
  keyId,
  toBase64,
} from '@fedssl/shared/crypto';
import { enrollRequestSchema } from '@fedssl/shared/protocol';
import { appendLedger } from '../audit/ledger';
import { agentPaths, loadAgentConfig, loadPartyKeys } from '../config/agent-config';
import { checkDataCommand, enrollCommand, initCommand, ledgerCommand, type CliIo } from './commands';
import { main } from './agent-cli';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'fedssl-cli-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function captureIo(): CliIo & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l) };
}

const mode = async (p: string) => (await stat(p)).mode & 0o777;

async function dataFolder(): Promise<string> {
  const d = await tempDir();
  for (let i = 0; i < 4; i++) {
    await writeFile(
      join(d, `img${i}.png`),
      await sharp(Buffer.alloc(16 * 16, 40 * i), { raw: { width: 16, height: 16, channels: 1 } })
        .toColourspace('b-w')
        .png()
        .toBuffer(),
    );
  }
  await writeFile(
    join(d, 'manifest.csv'),
    'file,patient_id\nimg0.png,P1\nimg1.png,P1\nimg2.png,P2\nimg3.png,P3\n',
  );
  return d;
}

describe('init', () => {
  it('creates the home with private files and prints the key fingerprint', async () => {
    const home = join(await tempDir(), 'agent');
    const io = captureIo();
    expect(await initCommand({ home, data: '/srv/images', imageSize: 64 }, io)).toBe(0);
    const p = agentPaths(home);
    expect(await mode(p.home)).toBe(0o700);
    for (const f of [p.config, p.keys, p.pseudonymSecret]) expect(await mode(f)).toBe(0o600);
    const keys = await loadPartyKeys(home);
    expect(io.lines).toContain(
      `Site key fingerprint:  ${fingerprint(keys.signing.publicKey, keys.box.publicKey)}`,
    );
    expect((await loadAgentConfig(home)).data).toEqual({
      path: '/srv/images',
      patientColumn: 'patient_id',
      imageSize: 64,
    });
    // The secret key is never printed.
    expect(io.lines.join('\n')).not.toContain(toBase64(keys.signing.secretKey));
  });

  it('through the CLI entry point: refuses to overwrite keys without --force (one stderr line, exit 1)', async () => {
    const home = join(await tempDir(), 'agent');
    expect(await main(['node', 'fedssl-agent', 'init', '--home', home, '--data', '/srv/images'])).toBe(0);
    const before = await readFile(agentPaths(home).keys, 'utf8');
    const errWrites: string[] = [];
    const origErr = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => {
      errWrites.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    let code: number;
    try {
      code = await main(['node', 'fedssl-agent', 'init', '--home', home, '--data', '/srv/images']);
    } finally {
      process.stderr.write = origErr;
      process.exitCode = undefined;
    }
    expect(code).toBe(1);
    expect(errWrites).toEqual([
      `error: [AGENT_CONFIG_INVALID] keys already exist in ${home}; pass --force to replace them (the site will have to enroll again)\n`,
    ]);
    expect(await readFile(agentPaths(home).keys, 'utf8')).toBe(before);
    expect(
      await main(['node', 'fedssl-agent', 'init', '--home', home, '--data', '/srv/images', '--force']),
    ).toBe(0);
    process.exitCode = undefined;
    expect(await readFile(agentPaths(home).keys, 'utf8')).not.toBe(before);
  });
});

describe('enroll', () => {
  async function fakeCoordinator(
    reply: (body: unknown) => { status: number; json: unknown },
  ): Promise<{ url: string; server: Server; bodies: unknown[] }> {
    const bodies: unknown[] = [];
    const server = createServer((req, res) => {
      let data = '';
      req.on('data', (c: Buffer) => (data += c.toString()));
      req.on('end', () => {
        expect(req.method).toBe('POST');
        expect(req.url).toBe('/api/v1/enroll');
        const body = JSON.parse(data) as unknown;
        bodies.push(body);
        const r = reply(body);
        res.writeHead(r.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(r.json));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, bodies };
  }

  it('registers the public keys, pins the coordinator keys and prints their fingerprint', async () => {
    const home = join(await tempDir(), 'agent');
    await initCommand({ home, data: '/srv/images' }, captureIo());
    const coord = generatePartyKeys();
    const coordinator = {
      keyId: keyId(coord.signing.publicKey),
      signingPublicKey: toBase64(coord.signing.publicKey),
      boxPublicKey: toBase64(coord.box.publicKey),
      fingerprint: fingerprint(coord.signing.publicKey, coord.box.publicKey),
    };
    const fc = await fakeCoordinator(() => ({
      status: 201,
      json: { siteId: 'site-7', siteName: 'Hospital A', coordinator, protocolVersion: 1 },
    }));
    try {
      const io = captureIo();
      expect(await enrollCommand({ home, coordinator: `${fc.url}/`, token: 'T'.repeat(32) }, io)).toBe(0);
      const sent = enrollRequestSchema.parse(fc.bodies[0]);
      const keys = await loadPartyKeys(home);
      expect(fromBase64(sent.signingPublicKey)).toEqual(keys.signing.publicKey);
      expect(JSON.stringify(fc.bodies[0])).not.toContain(toBase64(keys.signing.secretKey));
      const config = await loadAgentConfig(home);
      expect(config).toMatchObject({
        siteId: 'site-7',
        siteName: 'Hospital A',
        coordinatorUrl: fc.url,
        coordinator,
      });
      expect(io.lines).toContain(`Coordinator fingerprint:  ${coordinator.fingerprint}`);
      // Enrolling again needs --force.
      await expect(
        enrollCommand({ home, coordinator: fc.url, token: 'T'.repeat(32) }, captureIo()),
      ).rejects.toThrow('already enrolled as site-7');
    } finally {
      fc.server.close();
    }
  });

  it('enrolls against a newer coordinator whose answer carries added fields, pinning only the known key fields', async () => {
    const home = join(await tempDir(), 'agent');
    await initCommand({ home, data: '/srv/images' }, captureIo());
    const coord = generatePartyKeys();
    const coordinator = describeCoordinatorKeys(coord.signing.publicKey, coord.box.publicKey);
    const fc = await fakeCoordinator(() => ({
      status: 200,
      json: {
        siteId: 'site-8',
        siteName: 'Hospital B',
        coordinator: { ...coordinator, algorithm: 'ed25519+x25519' },
        protocolVersion: 1,
        addedInNextRelease: { region: 'eu' },
      },
    }));
    try {
      expect(await enrollCommand({ home, coordinator: fc.url, token: 'T'.repeat(32) }, captureIo())).toBe(0);
      const config = await loadAgentConfig(home);
      expect([config.siteId, config.coordinator]).toEqual(['site-8', coordinator]);
    } finally {
      fc.server.close();
    }
  });

  it('names the field of an enrollment answer it cannot use, and pins nothing', async () => {
    const home = join(await tempDir(), 'agent');
    await initCommand({ home, data: '/srv/images' }, captureIo());
    const fc = await fakeCoordinator(() => ({
      status: 200,
      json: { siteId: 'site-9', siteName: 'C', protocolVersion: 1 },
    }));
    try {
      await expect(
        enrollCommand({ home, coordinator: fc.url, token: 'T'.repeat(32) }, captureIo()),
      ).rejects.toThrow(
        'coordinator sent a malformed enrollment response (coordinator: Invalid input: expected object, received undefined); nothing was pinned',
      );
      expect((await loadAgentConfig(home)).coordinator).toBeNull();
    } finally {
      fc.server.close();
    }
  });

  it('passes on the coordinator error code and pins nothing', async () => {
    const home = join(await tempDir(), 'agent');
    await initCommand({ home, data: '/srv/images' }, captureIo());
    const fc = await fakeCoordinator(() => ({
      status: 401,
      json: { code: 'ENROLLMENT_TOKEN_USED', message: 'token already used' },
    }));
    try {
      await expect(
        enrollCommand({ home, coordinator: fc.url, token: 'T'.repeat(32) }, captureIo()),
      ).rejects.toMatchObject({
        code: 'ENROLLMENT_TOKEN_USED',
        message: 'enrollment refused: token already used',
      });
      expect((await loadAgentConfig(home)).coordinator).toBeNull();
    } finally {
      fc.server.close();
    }
  });

  it('refuses a response whose fingerprint does not match the keys', async () => {
    const home = join(await tempDir(), 'agent');
    await initCommand({ home, data: '/srv/images' }, captureIo());
    const coord = generatePartyKeys();
    const coordinator = {
      keyId: keyId(coord.signing.publicKey),
      signingPublicKey: toBase64(coord.signing.publicKey),
      boxPublicKey: toBase64(coord.box.publicKey),
      fingerprint: 'aaaa bbbb',
    };
    const fc = await fakeCoordinator(() => ({
      status: 201,
      json: { siteId: 'site-7', siteName: 'A', coordinator, protocolVersion: 1 },
    }));
    try {
      await expect(
        enrollCommand({ home, coordinator: fc.url, token: 'T'.repeat(32) }, captureIo()),
      ).rejects.toThrow('does not match its keys');
      expect((await loadAgentConfig(home)).siteId).toBeNull();
    } finally {
      fc.server.close();
    }
  });
});

describe('ledger and check-data', () => {
  it('prints the ledger as lines or JSON', async () => {
    const home = await tempDir();
    const io = captureIo();
    await ledgerCommand({ home }, io);
    expect(io.lines).toEqual(['No uploads or downloads recorded yet.']);
    await appendLedger(home, {
      kind: 'upload',
      time: '2025-01-02T03:04:05.000Z',
      runId: 'run-1',
      round: 2,
      taskId: 'task-9',
      modelVersion: 'v2',
      bytesSent: 12345,
      plaintextSha256: 'a'.repeat(64),
      ciphertextSha512: 'b'.repeat(128),
      tensors: ['x', 'y'],
      exampleCount: 40,
      accepted: true,
      updateId: 'upd-1',
    });
    const io2 = captureIo();
    await ledgerCommand({ home }, io2);
    expect(io2.lines).toEqual([
      'TIME (UTC)                DIR  RUN    ROUND  TASK    BYTES  SHA-256            TENSORS   EXAMPLES  RESULT',
      '------------------------  ---  -----  -----  ------  -----  -----------------  --------  --------  --------------',
      `2025-01-02T03:04:05.000Z  out  run-1      2  task-9  12345  ${'a'.repeat(16)}…  x 1, y 1        40  accepted upd-1`,
    ]);
    const io3 = captureIo();
    await ledgerCommand({ home, json: true }, io3);
    expect(JSON.parse(io3.lines.join('\n'))).toHaveLength(1);
  });

  it('check-data reports counts and patients without naming them', async () => {
    const data = await dataFolder();
    const io = captureIo();
    expect(await checkDataCommand({ data, imageSize: 8, json: true }, io)).toBe(0);
    const report = JSON.parse(io.lines.join('\n')) as Record<string, unknown>;
    expect(report).toMatchObject({ images: 4, patients: 3, metadataClasses: 3, skipped: [] });
    expect(io.lines.join('\n')).not.toMatch(/P1|P2|img0/);
    const human = captureIo();
    await checkDataCommand({ data, imageSize: 8 }, human);
    expect(human.lines.join('\n')).toContain('Patients:          3');
  });
});
