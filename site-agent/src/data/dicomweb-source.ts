import { FedsslError } from '@fedssl/shared/errors';
import {
  DEFAULT_LIMITS,
  SkipCounter,
  skip,
  type DataLimits,
  type DataSource,
  type Pseudonymizer,
  type ReadResult,
  type SourceItem,
  type SourceListing,
} from './data-source';
import { decodeDicom } from './dicom-decode';
import { DICOM_TAG_COLUMNS, dicomReadResult } from './dicom-source';

/**
 * A PACS reached over DICOMweb: QIDO-RS (`GET {root}/instances`, paged) lists the
 * instances, WADO-RS (`GET {root}/studies/{s}/series/{r}/instances/{i}`, multipart/related
 * with application/dicom parts, any transfer syntax) fetches each one, which is then
 * decoded like a file from a DICOM folder. Only GETs are made; no data is sent.
 */

/** Options of {@link DicomWebSource}. */
export interface DicomWebSourceOptions {
  /** The DICOMweb root, e.g. `http://pacs.local:8042/dicom-web`. */
  url: string;
  pseudonymize: Pseudonymizer;
  limits?: DataLimits;
  /** Extra headers (e.g. `Authorization`). */
  headers?: Record<string, string>;
  /** QIDO-RS page size (default 500). */
  pageSize?: number;
  /** Injectable for tests; default global fetch. */
  fetch?: typeof fetch;
}

const UID = /^[0-9.]{1,64}$/;

function firstValue(obj: Record<string, { Value?: unknown[] } | undefined>, tag: string): string | null {
  const v = obj[tag]?.Value?.[0];
  return typeof v === 'string' ? v : null;
}

/**
 * Split a multipart/related body into its parts' bodies (RFC 2046): parts are delimited by
 * `--boundary`, each has headers up to an empty line, and the last delimiter ends in `--`.
 */
export function parseMultipart(body: Uint8Array, boundary: string): Uint8Array[] {
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const delimiter = Buffer.from(`--${boundary}`, 'latin1');
  const parts: Uint8Array[] = [];
  let pos = buf.indexOf(delimiter);
  while (pos !== -1) {
    const after = pos + delimiter.length;
    if (buf[after] === 0x2d && buf[after + 1] === 0x2d) break; // closing delimiter
    const headerEnd = buf.indexOf('\r\n\r\n', after);
    if (headerEnd === -1) break;
    const next = buf.indexOf(delimiter, headerEnd + 4);
    if (next === -1) break;
    // The CRLF before a delimiter belongs to the delimiter.
    let end = next;
    if (buf[end - 2] === 0x0d && buf[end - 1] === 0x0a) end -= 2;
    parts.push(new Uint8Array(buf.subarray(headerEnd + 4, end)));
    pos = next;
  }
  return parts;
}

/** Read a response body, refusing more than `max` bytes without buffering them. */
async function readLimited(res: Response, max: number): Promise<Uint8Array | null> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > max) {
    await res.body?.cancel();
    return null;
  }
  if (!res.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.length;
    if (total > max) {
      await res.body.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

export class DicomWebSource implements DataSource {
  readonly kind = 'dicomweb' as const;
  private readonly root: string;
  private readonly limits: DataLimits;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly opts: DicomWebSourceOptions) {
    this.root = opts.url.replace(/\/+$/, '');
    this.limits = opts.limits ?? DEFAULT_LIMITS;
    this.fetchImpl = opts.fetch ?? fetch;
  }

  describe(): string {
    return `DICOMweb at ${this.safeRoot()}`;
  }

  /** The root without credentials, for messages. */
  private safeRoot(): string {
    const u = new URL(this.root);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/+$/, '');
  }

  async list(): Promise<SourceListing> {
    const pageSize = this.opts.pageSize ?? 500;
    const items: SourceItem[] = [];
    const skipped = new SkipCounter();
    for (let offset = 0; ; offset += pageSize) {
      const url = `${this.root}/instances?limit=${pageSize}&offset=${offset}`;
      let res: Response;
      try {
        res = await this.fetchImpl(url, {
          headers: { Accept: 'application/dicom+json', ...this.opts.headers },
        });
      } catch (e) {
        throw new FedsslError(
          'DATA_SOURCE_INVALID',
          `DICOMweb server not reachable at ${this.safeRoot()}: ${(e as Error).message}`,
        );
      }
      if (res.status === 204) break;
      if (!res.ok)
        throw new FedsslError(
          'DATA_SOURCE_INVALID',
          `QIDO-RS ${this.safeRoot()}/instances answered HTTP ${res.status}`,
        );
      const page = (await res.json()) as Record<string, { Value?: unknown[] }>[];
      if (!Array.isArray(page))
        throw new FedsslError('DATA_SOURCE_INVALID', 'QIDO-RS answer is not a JSON array');
      for (const obj of page) {
        const study = firstValue(obj, '0020000D');
        const series = firstValue(obj, '0020000E');
        const sop = firstValue(obj, '00080018');
        if (!study || !series || !sop || ![study, series, sop].every((u) => UID.test(u))) {
          skipped.add('invalid-header', 1, 'QIDO-RS result without valid Study/Series/SOP Instance UIDs');
          continue;
        }
        items.push({ key: `${study}/${series}/${sop}`, patient: null, tags: {}, label: null });
      }
      if (page.length < pageSize) break;
    }
    return { items, skipped, columns: [...DICOM_TAG_COLUMNS] };
  }

  async read(item: SourceItem, size: number): Promise<ReadResult> {
    const [study, series, sop] = item.key.split('/');
    const url = `${this.root}/studies/${study}/series/${series}/instances/${sop}`;
    let res: Response;
    try {
      res = await this.fetchImpl(url, {
        headers: {
          Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*',
          ...this.opts.headers,
        },
      });
    } catch (e) {
      return skip('fetch-failed', `WADO-RS request failed: ${(e as Error).message}`);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      return skip('fetch-failed', `WADO-RS answered HTTP ${res.status}`);
    }
    const type = res.headers.get('content-type') ?? '';
    const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
    const body = await readLimited(res, this.limits.maxBytes);
    if (body === null)
      return skip('too-large', `instance exceeds the limit of ${this.limits.maxBytes} bytes`);
    let dicom: Uint8Array;
    if (/^multipart\/related/i.test(type) && boundary) {
      const parts = parseMultipart(body, boundary);
      if (parts.length !== 1)
        return skip('fetch-failed', `WADO-RS multipart answer has ${parts.length} parts, expected 1`);
      dicom = parts[0]!;
    } else if (/^application\/dicom/i.test(type)) {
      dicom = body;
    } else {
      return skip('fetch-failed', `WADO-RS answered ${type.split(';')[0] || 'no content type'}, not DICOM`);
    }
    return dicomReadResult(await decodeDicom(dicom, { limits: this.limits }), size, this.opts.pseudonymize);
  }
}
