import net from 'node:net';

/**
 * A TCP proxy between one or more site agents and the coordinator that sees the wire as an
 * attacker or an auditor would. It forwards everything; it records every WebSocket frame the
 * client sends (unmasked), and on request plays the attacker by flipping one bit in the middle
 * of the first large binary frame (an encrypted update chunk). HTTP before the WebSocket
 * upgrade (enrollment, keys) passes through untouched.
 *
 * For the faults suite it is also the network going wrong: {@link WireProxy.hold} stops
 * forwarding in both directions (a stalled link: bytes wait, nothing is lost) until
 * {@link WireProxy.release}; {@link WireProxy.cut} drops every open connection (the proxy keeps
 * listening, so clients reconnect); `onClientFrame` sees each client frame right after it
 * was forwarded, so a test can hold or cut at an exact point of an upload.
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
  /** Stop forwarding (both directions) from the next frame on; frames are queued, not dropped. */
  hold(): void;
  /** Forward everything held, then carry on. */
  release(): void;
  /** Drop every open connection now (anything held is lost with it). */
  cut(): void;
  close(): Promise<void>;
}

export async function startWireProxy(
  target: { host: string; port: number },
  opts: {
    tamperFirstBinaryFrameOver?: number;
    /** Called for each client WebSocket frame once it is forwarded, or queued while held. */
    onClientFrame?: (frame: ClientFrame, proxy: WireProxy) => void;
    /** Hold the link just before forwarding the first client frame this returns true for. */
    holdBefore?: (frame: ClientFrame) => boolean;
  } = {},
): Promise<WireProxy> {
  const frames: ClientFrame[] = [];
  const httpBytes: Buffer[] = [];
  let tampered = 0;
  let held = false;
  const sockets = new Set<net.Socket>();
  /** Per connection: forward what is buffered (unless held). */
  const pumps = new Set<() => void>();
  /** The proxy being built, for onClientFrame (it exists before any frame arrives). */
  const self: { proxy?: WireProxy } = {};
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let mode: 'http' | 'ws' = 'http';
    let pending = Buffer.alloc(0);
    const down: Buffer[] = [];
    const up: Buffer[] = [];
    const pump = () => {
      while (!held && down.length > 0) client.write(down.shift()!);
      while (!held && up.length > 0) upstream.write(up.shift()!);
      pumpUp();
    };
    pumps.add(pump);
    // Downstream is read frame by frame too (after the upgrade's 101 response), so that while
    // the link is held the engine.io heartbeat (ping down, pong up) still passes: a stalled
    // link, not a dead one that socket.io would close after its ping timeout.
    let downMode: 'http' | 'ws' = 'http';
    let downPending = Buffer.alloc(0);
    upstream.on('data', (data: Buffer) => {
      if (downMode === 'http' && mode !== 'ws') {
        down.push(data);
        return pump();
      }
      downPending = Buffer.concat([downPending, data]);
      if (downMode === 'http') {
        const end = downPending.indexOf('\r\n\r\n');
        if (end < 0) return;
        down.push(downPending.subarray(0, end + 4));
        downPending = downPending.subarray(end + 4);
        downMode = 'ws';
      }
      for (;;) {
        const frame = parseFrame(downPending);
        if (!frame) break;
        const raw = Buffer.from(downPending.subarray(0, frame.total));
        downPending = downPending.subarray(frame.total);
        if (held && isHeartbeat(frame.opcode, unmask(raw.subarray(frame.payloadStart), frame.mask), '2'))
          client.write(raw);
        else down.push(raw);
      }
      pump();
    });
    client.on('data', (data: Buffer) => {
      pending = Buffer.concat([pending, data]);
      pump();
    });
    const pumpUp = () => {
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
      // WebSocket: forward whole frames only, so one can be altered before it leaves. While
      // held, frames are still read (and seen by onClientFrame) but queued.
      for (;;) {
        const frame = parseFrame(pending);
        if (!frame) break;
        const raw = pending.subarray(0, frame.total);
        pending = pending.subarray(frame.total);
        const payload = unmask(raw.subarray(frame.payloadStart), frame.mask);
        frames.push({ opcode: frame.opcode, payload });
        if (!held && opts.holdBefore?.(frames[frames.length - 1]!)) held = true;
        const limit = opts.tamperFirstBinaryFrameOver;
        if (limit !== undefined && tampered === 0 && frame.opcode === 2 && payload.length >= limit) {
          const at = frame.payloadStart + Math.floor(payload.length / 2);
          raw[at] = raw[at]! ^ 0x10;
          tampered++;
        }
        if (held && !isHeartbeat(frame.opcode, payload, '3')) up.push(Buffer.from(raw));
        else upstream.write(raw);
        opts.onClientFrame?.(frames[frames.length - 1]!, self.proxy!);
      }
    };
    const close = () => {
      pumps.delete(pump);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const proxy: WireProxy = {
    url: `http://127.0.0.1:${port}`,
    frames,
    httpBytes,
    get tampered() {
      return tampered;
    },
    hold: () => {
      held = true;
    },
    release: () => {
      held = false;
      for (const pump of [...pumps]) pump();
    },
    cut: () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  self.proxy = proxy;
  return proxy;
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

/** An engine.io v4 ping ('2', coordinator → agent) or pong ('3', agent → coordinator) frame. */
function isHeartbeat(opcode: number, payload: Buffer, packet: '2' | '3'): boolean {
  return opcode === 1 && payload.length === 1 && payload.toString('latin1') === packet;
}

function unmask(payload: Buffer, mask: Buffer | null): Buffer {
  const out = Buffer.from(payload);
  if (mask) for (let i = 0; i < out.length; i++) out[i] = out[i]! ^ mask[i & 3]!;
  return out;
}
