import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DicomFolderSource } from './dicom-source';
import { DicomWebSource, parseMultipart } from './dicomweb-source';
import { loadTrainingDataset } from './load-dataset';
import { pseudonymize } from './pseudonymize';

/**
 * DICOMweb against a real Orthanc (Debian packages orthanc + orthanc-dicomweb), started
 * here on free 127.0.0.1 ports with a temporary storage folder, loaded with the real
 * DICOM fixtures over its REST API, and stopped in teardown.
 */

const ORTHANC = '/usr/sbin/Orthanc';
const PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so';
const DICOM_DIR = resolve(__dirname, '../../../../shared/data/dicom');
// The MR_small variants share one SOP Instance UID, so Orthanc stores only one of them:
// the RLE one, so that a compressed syntax crosses WADO-RS (transfer-syntax=*).
const LOADED = ['CT_small.dcm', 'MR_small_RLE.dcm', 'JPEG2000.dcm', 'SC_rgb_small_odd.dcm', 'rtplan.dcm'];
const secret = new Uint8Array(32).fill(9);

let dir: string;
let orthanc: ChildProcess | undefined;
let base: string;

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

beforeAll(async () => {
  if (!existsSync(ORTHANC) || !existsSync(PLUGIN))
    throw new Error(
      `Orthanc with the DICOMweb plugin is required for this test: apt-get install orthanc orthanc-dicomweb (missing ${existsSync(ORTHANC) ? PLUGIN : ORTHANC})`,
    );
  if (!existsSync(join(DICOM_DIR, 'MR_small.dcm')))
    throw new Error(
      `real DICOM fixtures missing: expected ${DICOM_DIR} (../shared/data/dicom, see SOURCES.md)`,
    );
  dir = await mkdtemp(join(tmpdir(), 'fedssl-orthanc-'));
  const [httpPort, dicomPort] = [await freePort(), await freePort()];
  const config = {
    Name: 'fedssl-test',
    HttpPort: httpPort,
    DicomPort: dicomPort,
    StorageDirectory: join(dir, 'db'),
    IndexDirectory: join(dir, 'db'),
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    Plugins: [PLUGIN],
    DicomWeb: { Enable: true, Root: '/dicom-web/' },
  };
  await writeFile(join(dir, 'orthanc.json'), JSON.stringify(config));
  base = `http://127.0.0.1:${httpPort}`;
  const proc = spawn(ORTHANC, [join(dir, 'orthanc.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
  orthanc = proc;
  // Ready when Orthanc logs that it has started (it logs to stderr); fail on early exit.
  await new Promise<void>((res, rej) => {
    let log = '';
    const onData = (b: Buffer) => {
      log += b.toString();
      if (log.includes('Orthanc has started')) res();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) =>
      rej(new Error(`Orthanc exited with code ${code} before starting:\n${log.slice(-2000)}`)),
    );
  });
  for (const f of LOADED) {
    const res = await fetch(`${base}/instances`, {
      method: 'POST',
      body: await readFile(join(DICOM_DIR, f)),
    });
    if (!res.ok) throw new Error(`Orthanc refused ${f}: HTTP ${res.status}`);
  }
}, 60_000);

afterAll(async () => {
  if (orthanc && orthanc.exitCode === null) {
    const exited = new Promise((r) => orthanc!.once('exit', r));
    orthanc.kill('SIGTERM');
    await exited;
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('DicomWebSource against Orthanc', () => {
  it('lists instances with QIDO-RS and fetches each with WADO-RS, pixels identical to the files', async () => {
    const web = new DicomWebSource({
      url: `${base}/dicom-web/`,
      pseudonymize: (x) => pseudonymize(secret, x),
      pageSize: 4,
    });
    const listing = await web.list();
    expect(listing.items).toHaveLength(LOADED.length); // paged: 4 + 1
    const local = new DicomFolderSource({ root: DICOM_DIR, pseudonymize: (x) => pseudonymize(secret, x) });
    const byStudy = new Map<string, Float32Array[]>();
    for (const f of LOADED) {
      const r = await local.read({ key: f, patient: null, tags: {}, label: null }, 16);
      if (r.ok)
        byStudy.set(`${r.patient}|${r.tags.Modality}`, [
          ...(byStudy.get(`${r.patient}|${r.tags.Modality}`) ?? []),
          r.frames[0]!.pixels,
        ]);
    }
    const reasons: string[] = [];
    let images = 0;
    for (const item of listing.items) {
      const r = await web.read(item, 16);
      if (!r.ok) {
        reasons.push(r.reason);
        continue;
      }
      images++;
      const refs = byStudy.get(`${r.patient}|${r.tags.Modality}`);
      expect(refs).toBeDefined();
      expect(refs!.some((p) => Buffer.from(p.buffer).equals(Buffer.from(r.frames[0]!.pixels.buffer)))).toBe(
        true,
      );
    }
    expect(images).toBe(4);
    expect(reasons).toEqual(['no-pixel-data']);
  });

  it('loadTrainingDataset takes the URL; raw ids never reach the logs or the report', async () => {
    const lines: string[] = [];
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write(c: Buffer, _e, cb) {
          lines.push(c.toString());
          cb();
        },
      }),
    );
    const { report, images } = await loadTrainingDataset({
      path: `${base}/dicom-web`,
      imageSize: 8,
      secret,
      logger,
    });
    expect(report).toMatchObject({ source: 'dicomweb', items: 5, images: 4, patients: 4 });
    expect(report.skipped).toEqual([{ reason: 'no-pixel-data', count: 1 }]);
    const out = JSON.stringify(report) + JSON.stringify(images) + lines.join('');
    for (const raw of ['1CT1', '4MR1', '8NM1', 'ID1', '1.3.6.1.4.1.5962']) expect(out).not.toContain(raw);
  });

  it('an unreachable server or a wrong root is a clear error; a missing instance is a skip', async () => {
    const port = await freePort();
    await expect(
      new DicomWebSource({ url: `http://127.0.0.1:${port}/dicom-web`, pseudonymize: (x) => x }).list(),
    ).rejects.toThrow(`DICOMweb server not reachable at http://127.0.0.1:${port}/dicom-web`);
    await expect(new DicomWebSource({ url: `${base}/nope`, pseudonymize: (x) => x }).list()).rejects.toThrow(
      'answered HTTP 404',
    );
    const web = new DicomWebSource({ url: `${base}/dicom-web`, pseudonymize: (x) => x });
    expect(await web.read({ key: '1.2/3.4/5.6', patient: null, tags: {}, label: null }, 8)).toMatchObject({
      ok: false,
      reason: 'fetch-failed',
    });
  });

  it('refuses an instance larger than the byte limit without buffering it', async () => {
    const web = new DicomWebSource({
      url: `${base}/dicom-web`,
      pseudonymize: (x) => x,
      limits: { maxPixels: 1e8, maxFrames: 10, maxBytes: 1000 },
    });
    const { items } = await web.list();
    const results = await Promise.all(items.map((i) => web.read(i, 8)));
    expect(results.every((r) => !r.ok && r.reason === 'too-large')).toBe(true);
  });
});

describe('parseMultipart', () => {
  it('splits parts, keeps binary bodies intact and drops the CRLF before each delimiter', () => {
    const body = Buffer.concat([
      Buffer.from('preamble\r\n--b1\r\nContent-Type: application/dicom\r\n\r\n'),
      Buffer.from([0, 13, 10, 45, 45, 255]),
      Buffer.from('\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nxy\r\n--b1--\r\n'),
    ]);
    expect(parseMultipart(body, 'b1').map((p) => Array.from(p))).toEqual([
      [0, 13, 10, 45, 45, 255],
      [120, 121],
    ]);
  });
});
