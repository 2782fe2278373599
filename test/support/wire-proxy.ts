import net from 'node:net';

/**
 * A TCP proxy between one or more site agents and the coordinator that sees the wire as an
 * attacker or an auditor would. It forwards everything; it records every WebSocket frame the
 * client sends (unmasked), and on request plays the attacker by flipping one bit in the middle
 * of the first large binary frame (an encrypted update chunk). HTTP before the WebSocket
 * upgrade (enrollment, keys) passes through untouched.
 */
export interface ClientFrame {
  opcode: number;
  payload: Buffer;
}

export interface WireProxy {
  url: string;
  /** Every complete WebSocket frame sent by clients, unmasked, in order. */
  readonly frames: ClientFrame[];
  /** Raw bytes sent by clients before their WebSocket upgrade (HTTP requests). */
  readonly httpBytes: Buffer[];
  /** Number of frames altered so far. */
  readonly tampered: number;
  close(): Promise<void>;
}

export async function startWireProxy(
  target: { host: string; port: number },
  opts: { tamperFirstBinaryFrameOver?: number } = {},
): Promise<WireProxy> {
  const frames: ClientFrame[] = [];
  const httpBytes: Buffer[] = [];
  let tampered = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let mode: 'http' | 'ws' = 'http';
    let pending = Buffer.alloc(0);
    client.on('data', (data: Buffer) => {
      pending = Buffer.concat([pending, data]);
      if (mode === 'http') {
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = pending.subarray(0, end + 4);
        httpBytes.push(Buffer.from(head));
        upstream.write(head);
        pending = pending.subarray(end + 4);
        if (/^upgrade:\s*websocket/im.test(head.toString('latin1'))) mode = 'ws';
        else {
          // A plain request: its body (if any) follows; forward it as is.
          httpBytes.push(Buffer.from(pending));
          upstream.write(pending);
          pending = Buffer.alloc(0);
          return;
        }
      }
      // WebSocket: forward whole frames only, so one can be altered before it leaves.
      for (;;) {
        const frame = parseFrame(pending);
        if (!frame) break;
        const raw = pending.subarray(0, frame.total);
        pending = pending.subarray(frame.total);
        const payload = unmask(raw.subarray(frame.payloadStart), frame.mask);
        frames.push({ opcode: frame.opcode, payload });
        const limit = opts.tamperFirstBinaryFrameOver;
        if (limit !== undefined && tampered === 0 && frame.opcode === 2 && payload.length >= limit) {
          const at = frame.payloadStart + Math.floor(payload.length / 2);
          raw[at] = raw[at]! ^ 0x10;
          tampered++;
        }
        upstream.write(raw);
      }
    });
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    frames,
    httpBytes,
    get tampered() {
      return tampered;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** RFC 6455 frame header; undefined until the whole frame is buffered. */
function parseFrame(
  b: Buffer,
): { opcode: number; mask: Buffer | null; payloadStart: number; total: number } | undefined {
  if (b.length < 2) return undefined;
  if ((b[0]! & 0x40) !== 0)
    throw new Error('wire proxy: compressed WebSocket frames (permessage-deflate) are not expected');
  const opcode = b[0]! & 0x0f;
  const masked = (b[1]! & 0x80) !== 0;
  let len = b[1]! & 0x7f;
  let at = 2;
  if (len === 126) {
    if (b.length < 4) return undefined;
    len = b.readUInt16BE(2);
    at = 4;
  } else if (len === 127) {
    if (b.length < 10) return undefined;
    len = Number(b.readBigUInt64BE(2));
    at = 10;
  }
  let mask: Buffer | null = null;
  if (masked) {
    if (b.length < at + 4) return undefined;
    mask = b.subarray(at, at + 4);
    at += 4;
  }
  if (b.length < at + len) return undefined;
  return { opcode, mask, payloadStart: at, total: at + len };
}

function unmask(payload: Buffer, mask: Buffer | null): Buffer {
  const out = Buffer.from(payload);
  if (mask) for (let i = 0; i < out.length; i++) out[i] = out[i]! ^ mask[i & 3]!;
  return out;
}
