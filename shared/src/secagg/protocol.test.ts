import { split, combine } from 'shamir-secret-sharing';
import { describe, expect, it } from 'vitest';
import { isFedsslError } from '../errors';
import {
  minimumThreshold,
  SecAggClient,
  SecAggServer,
  type MaskedInputMsg,
  type SecAggParams,
} from './protocol';
import { decodeFixed, encodeFixed, maxAbsInput, RING } from './ring';
import { chiSquareTopByte, pearson } from './statistics';

const D = 4096;

function inputOf(k: number, d = D): Float64Array {
  // Structured, far from uniform: a smooth curve of small values, mixed signs.
  return Float64Array.from({ length: d }, (_, i) => 0.05 * Math.sin((i + 1) * (k + 1) * 0.01) - 0.01 * k);
}

/** The exact fixed-point sum the protocol must return: Σ round(x·2^24), as a real. */
function exactSum(inputs: Float64Array[]): Float64Array {
  const acc = new Float64Array(inputs[0]!.length);
  for (const x of inputs) for (let i = 0; i < x.length; i++) acc[i]! += Math.round(x[i]! * 2 ** 24);
  return acc.map((v) => v / 2 ** 24);
}

interface Session {
  sum: Float64Array;
  server: SecAggServer;
  masked: Map<string, MaskedInputMsg>;
}

/**
 * Runs a full session of `n` parties p0..p{n-1}: `dropBeforeMask` vanish after sharing keys,
 * `dropBeforeUnmask` after sending their masked input.
 */
async function session(
  n: number,
  opts: { threshold?: number; dropBeforeMask?: string[]; dropBeforeUnmask?: string[]; d?: number } = {},
): Promise<Session> {
  const d = opts.d ?? D;
  const params: SecAggParams = {
    sessionId: 'run-1/1/1',
    threshold: opts.threshold ?? minimumThreshold(n),
    dimension: d,
  };
  const clients = Array.from({ length: n }, (_, k) => new SecAggClient(`p${k}`, params));
  const server = new SecAggServer(params);
  for (const c of clients) server.receiveAdvertise(c.advertise());
  const roster = server.closeAdvertise();
  for (const c of clients) server.receiveShares(await c.shareKeys(roster));
  const boxes = server.closeShares();
  const masked = new Map<string, MaskedInputMsg>();
  clients.forEach((c, k) => {
    if (opts.dropBeforeMask?.includes(c.party)) return;
    const m = c.maskedInput(boxes.get(c.party)!, inputOf(k, d));
    masked.set(c.party, m);
    server.receiveMasked(m);
  });
  const survivors = server.closeMasked();
  for (const c of clients) {
    if (!survivors.includes(c.party) || opts.dropBeforeUnmask?.includes(c.party)) continue;
    server.receiveUnmask(c.unmask(survivors));
  }
  return { sum: await server.finish(), server, masked };
}

describe('secure aggregation: masks cancel', () => {
  it('the server gets the exact fixed-point sum of every input, and nothing else', async () => {
    const { sum, server } = await session(4);
    expect(server.survivors).toEqual(['p0', 'p1', 'p2', 'p3']);
    expect(sum).toEqual(exactSum([0, 1, 2, 3].map((k) => inputOf(k))));
  });

  it('a single masked update is indistinguishable from uniform and uncorrelated with the input', async () => {
    const d = 65_536;
    const { masked } = await session(3, { d });
    const y = masked.get('p1')!.masked;
    const x = encodeFixed(inputOf(1, d), 3);
    // χ² with 255 degrees of freedom: 330.5 is the 0.1 % critical value. The plain encoded
    // input fails it by orders of magnitude, so the test can fail.
    expect(chiSquareTopByte(y)).toBeLessThan(330.5);
    expect(chiSquareTopByte(x)).toBeGreaterThan(100_000);
    expect(Math.abs(pearson(y, x))).toBeLessThan(5 / Math.sqrt(d));
    expect(Math.abs(pearson(y, inputOf(1, d)))).toBeLessThan(5 / Math.sqrt(d));
    expect(y.every((v) => Number.isInteger(v) && v >= 0 && v < RING)).toBe(true);
  });
});

describe('secure aggregation: dropouts', () => {
  it('recovers a site that dropped after sharing keys, before sending its masked input', async () => {
    const { sum, server } = await session(4, { dropBeforeMask: ['p2'] });
    expect(server.survivors).toEqual(['p0', 'p1', 'p3']);
    expect(sum).toEqual(exactSum([0, 1, 3].map((k) => inputOf(k))));
  });

  it('keeps the input of a site that dropped after masking, before unmasking', async () => {
    const { sum } = await session(3, { dropBeforeUnmask: ['p0'] });
    expect(sum).toEqual(exactSum([0, 1, 2].map((k) => inputOf(k))));
  });

  it('fails with fewer than t unmasking answers, and t−1 shares do not rebuild a secret', async () => {
    await expect(session(3, { dropBeforeUnmask: ['p0', 'p1'] })).rejects.toMatchObject({
      code: 'SECAGG_TOO_FEW_PARTIES',
      message: '1 unmasking answers; need 2',
    });
    const secret = new Uint8Array(32).fill(7);
    const shares = await split(secret, 5, 3);
    expect(await combine(shares.slice(0, 3))).toEqual(secret);
    expect(await combine(shares.slice(0, 2))).not.toEqual(secret);
    expect(await combine(shares.slice(2, 4))).not.toEqual(await combine(shares.slice(0, 2)));
  });
});

describe('secure aggregation: protocol checks', () => {
  const params: SecAggParams = { sessionId: 's', threshold: 2, dimension: 8 };

  it('a client refuses to unmask for fewer than t survivors or for parties that never shared', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((p) => new SecAggClient(p, params));
    const server = new SecAggServer(params);
    for (const x of [a!, b!, c!]) server.receiveAdvertise(x.advertise());
    const roster = server.closeAdvertise();
    for (const x of [a!, b!]) server.receiveShares(await x.shareKeys(roster));
    const boxes = server.closeShares();
    a!.maskedInput(boxes.get('a')!, new Float64Array(8));
    expect(() => a!.unmask(['a'])).toThrow('1 survivors; need 2');
    expect(() => a!.unmask(['a', 'c'])).toThrow('survivor c did not share keys');
    expect(a!.unmask(['a', 'b']).keyShares).toEqual({});
  });

  it('refuses a threshold of half the parties or less, steps out of order, and a forged share', async () => {
    expect(() => new SecAggServer({ ...params, threshold: 2 }).closeAdvertise()).toThrow(
      'secure aggregation needs 2..255 parties, got 0',
    );
    const s4 = new SecAggServer({ ...params, threshold: 2 });
    for (const p of ['a', 'b', 'c', 'd']) s4.receiveAdvertise(new SecAggClient(p, params).advertise());
    expect(() => s4.closeAdvertise()).toThrow('threshold 2 must be an integer in [3, 4] for 4 parties');
    const s = new SecAggServer(params);
    expect(() => s.closeMasked()).toThrow('expected the masked step, the session is at advertise');

    // A forged unmasking share makes the rebuilt self mask miss its commitment.
    const [a, b] = ['a', 'b'].map((p) => new SecAggClient(p, params));
    const server = new SecAggServer(params);
    for (const x of [a!, b!]) server.receiveAdvertise(x.advertise());
    const roster = server.closeAdvertise();
    for (const x of [a!, b!]) server.receiveShares(await x.shareKeys(roster));
    const boxes = server.closeShares();
    for (const x of [a!, b!])
      server.receiveMasked(x.maskedInput(boxes.get(x.party)!, new Float64Array(8).fill(1)));
    const survivors = server.closeMasked();
    const ua = a!.unmask(survivors);
    const forged = Buffer.from(ua.selfMaskShares.b!, 'base64');
    forged[0] = forged[0]! ^ 1;
    server.receiveUnmask({ ...ua, selfMaskShares: { ...ua.selfMaskShares, b: forged.toString('base64') } });
    server.receiveUnmask(b!.unmask(survivors));
    const err: unknown = await server.finish().catch((e: unknown) => e);
    expect(isFedsslError(err, 'SECAGG_RECONSTRUCTION_FAILED')).toBe(true);
  });
});

describe('fixed-point ring', () => {
  it('round-trips signed values at 2^-24 resolution and detects values that could wrap the sum', () => {
    const x = Float64Array.from([0, 1, -1, 0.5e-7, -3.25, maxAbsInput(3)]);
    expect(decodeFixed(encodeFixed(x, 3))).toEqual(x.map((v) => Math.round(v * 2 ** 24) / 2 ** 24));
    expect(maxAbsInput(3)).toBeCloseTo(2 ** 23 / 3, 0);
    let err: unknown;
    try {
      encodeFixed([0, maxAbsInput(3) * 1.001], 3);
    } catch (e) {
      err = e;
    }
    expect(isFedsslError(err, 'SECAGG_OVERFLOW')).toBe(true);
    expect(() => encodeFixed([Number.NaN], 3)).toThrow('value at 0 is outside the fixed-point range');
  });
});
