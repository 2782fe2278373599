import net from 'node:net';

/**
 * A TCP proxy that plays the attacker on the wire: it forwards everything between a client
 * and the coordinator, and flips one bit in the payload of the first large binary WebSocket
 * frame the client sends (an encrypted update chunk). Everything else passes untouched, so the
 * agent's enrollment, authentication and model download work and only the upload is altered.
 */
export interface TamperProxy {
  port: number;
  url: string;
  /** Number of frames altered so far. */
  readonly tampered: number;
  close(): Promise<void>;
}

export async function startTamperProxy(
  target: { host: string; port: number },
  minPayload = 1024,
): Promise<TamperProxy> {
  let tampered = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    const parser = new ClientFrameParser((payloadOffsetInChunk, chunk) => {
      if (tampered > 0) return;
      chunk[payloadOffsetInChunk] = chunk[payloadOffsetInChunk]! ^ 0x10;
      tampered++;
    }, minPayload);
    client.on('data', (data: Buffer) => {
      parser.feed(data);
      upstream.write(data);
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
    port,
    url: `http://127.0.0.1:${port}`,
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

/**
 * Follows the client→server byte stream of one connection: HTTP request headers until an
 * upgrade to WebSocket, then RFC 6455 frames. Calls `onTarget` with a byte position inside the
 * current data buffer that lies in the middle of the payload of a large binary frame.
 */
class ClientFrameParser {
  private mode: 'http' | 'ws' = 'http';
  private httpHead = '';
  private header = Buffer.alloc(0);
  private remainingPayload = 0;
  private payloadTarget = -1; // offset within the payload to flip, -1 = none

  constructor(
    private readonly onTarget: (offset: number, chunk: Buffer) => void,
    private readonly minPayload: number,
  ) {}

  feed(data: Buffer): void {
    let i = 0;
    if (this.mode === 'http') {
      this.httpHead += data.toString('latin1');
      const end = this.httpHead.indexOf('\r\n\r\n');
      if (end < 0) return;
      const isUpgrade = /^upgrade:\s*websocket/im.test(this.httpHead.slice(0, end));
      if (!isUpgrade) {
        // Plain HTTP (enrollment, keys): keep looking at the next request on this connection.
        this.httpHead = this.httpHead.slice(end + 4);
        return;
      }
      this.mode = 'ws';
      i = data.length - (this.httpHead.length - (end + 4));
    }
    while (i < data.length) {
      if (this.remainingPayload > 0) {
        const take = Math.min(this.remainingPayload, data.length - i);
        const consumedBefore = this.payloadLength - this.remainingPayload;
        if (this.payloadTarget >= consumedBefore && this.payloadTarget < consumedBefore + take) {
          this.onTarget(i + (this.payloadTarget - consumedBefore), data);
          this.payloadTarget = -1;
        }
        this.remainingPayload -= take;
        i += take;
        continue;
      }
      this.header = Buffer.concat([this.header, data.subarray(i, i + 1)]);
      i++;
      const parsed = parseFrameHeader(this.header);
      if (!parsed) continue;
      this.header = Buffer.alloc(0);
      this.payloadLength = parsed.length;
      this.remainingPayload = parsed.length;
      this.payloadTarget =
        parsed.opcode === 2 && parsed.length >= this.minPayload ? Math.floor(parsed.length / 2) : -1;
    }
  }

  private payloadLength = 0;
}

function parseFrameHeader(h: Buffer): { opcode: number; length: number } | undefined {
  if (h.length < 2) return undefined;
  const opcode = h[0]! & 0x0f;
  const masked = (h[1]! & 0x80) !== 0;
  let len = h[1]! & 0x7f;
  let need = 2;
  if (len === 126) need += 2;
  else if (len === 127) need += 8;
  if (masked) need += 4;
  if (h.length < need) return undefined;
  if (len === 126) len = h.readUInt16BE(2);
  else if (len === 127) len = Number(h.readBigUInt64BE(2));
  return { opcode, length: len };
}
