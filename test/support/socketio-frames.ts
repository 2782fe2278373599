import type { ClientFrame } from './wire-proxy';

/**
 * Decodes the socket.io events a client sent, from the raw WebSocket frames a proxy recorded
 * (engine.io v4 over WebSocket: a text frame "4<socket.io packet>", binary attachments as the
 * following binary frames). Only what the tests need: EVENT and BINARY_EVENT packets.
 */
export interface SentEvent {
  namespace: string;
  name: string;
  args: unknown[];
}

export function decodeSentEvents(frames: readonly ClientFrame[]): SentEvent[] {
  const events: SentEvent[] = [];
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i]!;
    if (f.opcode !== 1) continue;
    const text = f.payload.toString('utf8');
    if (!text.startsWith('4')) continue; // engine.io MESSAGE only
    let p = text.slice(1);
    const type = p[0];
    if (type !== '2' && type !== '5') continue; // EVENT, BINARY_EVENT
    p = p.slice(1);
    let attachments = 0;
    if (type === '5') {
      const dash = p.indexOf('-');
      attachments = Number(p.slice(0, dash));
      p = p.slice(dash + 1);
    }
    let namespace = '/';
    if (p.startsWith('/')) {
      const comma = p.indexOf(',');
      namespace = p.slice(0, comma);
      p = p.slice(comma + 1);
    }
    p = p.replace(/^\d+/, ''); // ack id
    const binaries: Buffer[] = [];
    for (let k = 0; k < attachments; k++) binaries.push(frames[++i]!.payload);
    const [name, ...args] = reviveAttachments(JSON.parse(p), binaries) as [string, ...unknown[]];
    events.push({ namespace, name, args });
  }
  return events;
}

function reviveAttachments(value: unknown, binaries: Buffer[]): unknown {
  if (Array.isArray(value)) return value.map((v) => reviveAttachments(v, binaries));
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (o._placeholder === true && typeof o.num === 'number') return new Uint8Array(binaries[o.num]!);
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, reviveAttachments(v, binaries)]));
  }
  return value;
}
