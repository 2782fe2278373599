/**
 * A minimal DICOM writer for tests: builds Part 10 files (or bare datasets) with chosen
 * header values and pixel data, so tests can craft hostile or unusual inputs. Explicit VR
 * little or big endian; encapsulated pixel data as given fragments. Not for production.
 */

export interface DicomElement {
  tag: number; // (group << 16) | element
  vr: string;
  value: string | Uint8Array | number[]; // number[] for US (uint16 values)
}

const LONG_VRS = new Set(['OB', 'OW', 'OF', 'SQ', 'UT', 'UN']);

function u16(n: number, le: boolean): number[] {
  return le ? [n & 0xff, (n >> 8) & 0xff] : [(n >> 8) & 0xff, n & 0xff];
}
function u32(n: number, le: boolean): number[] {
  const b = [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
  return le ? b : b.reverse();
}

function valueBytes(e: DicomElement, le: boolean): Uint8Array {
  if (typeof e.value === 'string') {
    let s = e.value;
    if (s.length % 2) s += e.vr === 'UI' ? '\0' : ' ';
    return new Uint8Array(Buffer.from(s, 'latin1'));
  }
  if (Array.isArray(e.value)) return new Uint8Array(e.value.flatMap((v) => u16(v, le)));
  return e.value.length % 2 ? Uint8Array.from([...e.value, 0]) : e.value;
}

function encodeElement(e: DicomElement, le: boolean, explicit = true): number[] {
  const out = [...u16(e.tag >>> 16, le), ...u16(e.tag & 0xffff, le)];
  const v = valueBytes(e, le);
  if (!explicit) return [...out, ...u32(v.length, le), ...v];
  out.push(e.vr.charCodeAt(0), e.vr.charCodeAt(1));
  if (LONG_VRS.has(e.vr)) out.push(0, 0, ...u32(v.length, le));
  else out.push(...u16(v.length, le));
  return [...out, ...v];
}

/** Encapsulated pixel data: empty offset table, one item per fragment, sequence delimiter. */
function encapsulated(fragments: Uint8Array[]): number[] {
  const item = (b: Uint8Array) => {
    const padded = b.length % 2 ? Uint8Array.from([...b, 0]) : b;
    return [...u16(0xfffe, true), ...u16(0xe000, true), ...u32(padded.length, true), ...padded];
  };
  return [
    ...u16(0x7fe0, true),
    ...u16(0x0010, true),
    0x4f,
    0x42,
    0,
    0,
    ...u32(0xffffffff, true),
    ...item(new Uint8Array(0)),
    ...fragments.flatMap(item),
    ...u16(0xfffe, true),
    ...u16(0xe0dd, true),
    ...u32(0, true),
  ];
}

export interface WriteDicomOptions {
  transferSyntax?: string;
  /** Header elements (sorted by the writer). */
  elements: DicomElement[];
  /** Native pixel data (written as OW/OB with the dataset's byte order as given). */
  pixelData?: Uint8Array;
  /** Encapsulated fragments (one per frame). */
  fragments?: Uint8Array[];
  /** Write a bare implicit-VR dataset without preamble and file meta. */
  bare?: boolean;
}

/** Build a DICOM file. */
export function writeDicom(opts: WriteDicomOptions): Uint8Array {
  const ts = opts.transferSyntax ?? '1.2.840.10008.1.2.1';
  const le = ts !== '1.2.840.10008.1.2.2';
  const elements = [...opts.elements].sort((a, b) => a.tag - b.tag);
  const body: number[] = [];
  for (const e of elements) body.push(...encodeElement(e, le, !opts.bare));
  if (opts.pixelData)
    body.push(...encodeElement({ tag: 0x7fe00010, vr: 'OW', value: opts.pixelData }, le, !opts.bare));
  if (opts.fragments) body.push(...encapsulated(opts.fragments));
  if (opts.bare) return Uint8Array.from(body);
  const metaBody = [
    ...encodeElement({ tag: 0x00020001, vr: 'OB', value: Uint8Array.from([0, 1]) }, true),
    ...encodeElement({ tag: 0x00020010, vr: 'UI', value: ts }, true),
  ];
  const groupLength = encodeElement(
    { tag: 0x00020000, vr: 'UL', value: new Uint8Array(u32(metaBody.length, true)) },
    true,
  );
  return Uint8Array.from([
    ...new Array(128).fill(0),
    0x44,
    0x49,
    0x43,
    0x4d,
    ...groupLength,
    ...metaBody,
    ...body,
  ]);
}

/** The usual image-pixel header elements. */
export function imageHeader(o: {
  rows: number;
  cols: number;
  bitsAllocated?: number;
  bitsStored?: number;
  signed?: boolean;
  spp?: number;
  photometric?: string;
  frames?: number | string;
  patientId?: string;
  extra?: DicomElement[];
}): DicomElement[] {
  const ba = o.bitsAllocated ?? 16;
  const els: DicomElement[] = [
    { tag: 0x00080016, vr: 'UI', value: '1.2.840.10008.5.1.4.1.1.7' },
    { tag: 0x00080060, vr: 'CS', value: 'OT' },
    { tag: 0x00280002, vr: 'US', value: [o.spp ?? 1] },
    { tag: 0x00280004, vr: 'CS', value: o.photometric ?? 'MONOCHROME2' },
    { tag: 0x00280010, vr: 'US', value: [o.rows] },
    { tag: 0x00280011, vr: 'US', value: [o.cols] },
    { tag: 0x00280100, vr: 'US', value: [ba] },
    { tag: 0x00280101, vr: 'US', value: [o.bitsStored ?? ba] },
    { tag: 0x00280102, vr: 'US', value: [(o.bitsStored ?? ba) - 1] },
    { tag: 0x00280103, vr: 'US', value: [o.signed ? 1 : 0] },
  ];
  if (o.frames !== undefined) els.push({ tag: 0x00280008, vr: 'IS', value: String(o.frames) });
  if (o.patientId !== undefined) els.push({ tag: 0x00100020, vr: 'LO', value: o.patientId });
  return [...els, ...(o.extra ?? [])];
}
