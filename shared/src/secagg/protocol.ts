import { createHash } from 'node:crypto';
import nacl from 'tweetnacl';
import { combine, split } from 'shamir-secret-sharing';
import { FedsslError } from '../errors';
import { addInto, applyMask, decodeFixed, DEFAULT_FRACTION_BITS, encodeFixed } from './ring';

/**
 * Secure aggregation with dropouts (Bonawitz et al., CCS 2017, "Practical Secure Aggregation for
 * Privacy-Preserving Machine Learning"), semi-honest server variant:
 *
 *   0 advertise keys  each party u: two X25519 key pairs, c (encrypts shares) and s (mask
 *                     agreement); the server relays the roster U1 (|U1| ≥ t).
 *   1 share keys      u draws a self-mask seed b_u, Shamir-splits b_u and s_u^SK t-of-|U1|,
 *                     and sends each v ∈ U1 its two shares boxed under c_u^SK·c_v^PK, plus
 *                     SHA-256(b_u) so the server can check what it rebuilds. U2 = senders.
 *   2 masked input    y_u = x_u + PRG(b_u) + Σ_{v∈U2, v≠u} ±PRG(s_uv) in Z_{2^48}, + when u < v,
 *                     − when u > v, s_uv from X25519(s_u^SK, s_v^PK): the pairwise masks cancel
 *                     in Σ y. U3 = senders (|U3| ≥ t).
 *   3 unmasking       each u ∈ U3 opens the shares it holds and reveals, for v ∈ U3, v's b
 *                     share, and for v ∈ U2 \ U3 (dropped after sharing), v's s^SK share —
 *                     never both for one party. With ≥ t answers the server rebuilds the b_v
 *                     of survivors and the s^SK of the dropped, removes their masks and gets
 *                     Σ_{u∈U3} x_u and nothing else.
 *
 * Not implemented: the consistency-check round and signed keys of the malicious-server variant
 * (docs/privacy.md, threat model). Parties are identified by string ids, sorted for the ± rule.
 */

const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64');
const unb64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

export interface SecAggParams {
  /** Binds keys, masks and share boxes to one round attempt (e.g. `runId/round/attempt`). */
  sessionId: string;
  /** Shares needed to rebuild a secret: at least 2 and more than half of the roster. */
  threshold: number;
  /** Length of every input vector. */
  dimension: number;
  fractionBits?: number;
}

export interface AdvertiseKeysMsg {
  party: string;
  /** X25519 public keys, base64: `c` for share boxes, `s` for mask agreement. */
  cPk: string;
  sPk: string;
}

/** One party's boxed shares for another. */
export interface EncryptedShare {
  from: string;
  to: string;
  nonce: string;
  box: string;
}

export interface ShareKeysMsg {
  party: string;
  /** SHA-256 hex of b_u (a commitment: lets the server check the b_u it rebuilds). */
  selfMaskCommitment: string;
  shares: EncryptedShare[];
}

export interface MaskedInputMsg {
  party: string;
  /** y_u, one ring element (integer in [0, 2^48)) per coordinate. */
  masked: Float64Array;
}

export interface UnmaskMsg {
  party: string;
  /** Shares of b_v for survivors v ∈ U3, and of s_v^SK for dropped v ∈ U2 \ U3 (base64). */
  selfMaskShares: Record<string, string>;
  keyShares: Record<string, string>;
}

/** The smallest threshold this implementation accepts for `n` parties: max(2, ⌊n/2⌋ + 1). */
export function minimumThreshold(n: number): number {
  return Math.max(2, Math.floor(n / 2) + 1);
}

function fail(message: string): never {
  throw new FedsslError('SECAGG_PROTOCOL', message);
}

function checkThreshold(threshold: number, n: number): void {
  if (n < 2 || n > 255)
    throw new FedsslError('SECAGG_TOO_FEW_PARTIES', `secure aggregation needs 2..255 parties, got ${n}`);
  if (!Number.isInteger(threshold) || threshold < minimumThreshold(n) || threshold > n)
    fail(`threshold ${threshold} must be an integer in [${minimumThreshold(n)}, ${n}] for ${n} parties`);
}

/** The 32-byte seed of the pairwise mask between two parties, from one side's secret. */
export function pairSeed(sessionId: string, mySecret: Uint8Array, theirPublic: Uint8Array): Uint8Array {
  const shared = nacl.box.before(theirPublic, mySecret);
  const seed = createHash('sha256').update(`fedssl-secagg-pair\n${sessionId}\n`).update(shared).digest();
  shared.fill(0);
  return new Uint8Array(seed);
}

function shareNonce(sessionId: string, from: string, to: string): Uint8Array {
  // Deterministic per (session, sender, recipient): each box key encrypts exactly one message.
  return new Uint8Array(
    createHash('sha512').update(`fedssl-secagg-share\n${sessionId}\n${from}\n${to}`).digest().subarray(0, 24),
  );
}

const sha256Hex = (u: Uint8Array): string => createHash('sha256').update(u).digest('hex');

/** One site's side of the protocol. Call the steps in order; each may be called once. */
export class SecAggClient {
  private readonly c = nacl.box.keyPair();
  private readonly s = nacl.box.keyPair();
  private readonly b = nacl.randomBytes(32);
  private roster: AdvertiseKeysMsg[] | null = null;
  /** U2 as seen by this party, and the boxes it received from them. */
  private received: Map<string, EncryptedShare> | null = null;
  private unmasked = false;

  constructor(
    readonly party: string,
    private readonly params: SecAggParams,
  ) {}

  advertise(): AdvertiseKeysMsg {
    return { party: this.party, cPk: b64(this.c.publicKey), sPk: b64(this.s.publicKey) };
  }

  /** Step 1: Shamir-share b_u and s_u^SK to every party in the roster U1 (which includes us). */
  async shareKeys(roster: readonly AdvertiseKeysMsg[]): Promise<ShareKeysMsg> {
    if (this.roster) fail('shareKeys called twice');
    const sorted = [...roster].sort((x, y) => (x.party < y.party ? -1 : 1));
    if (new Set(sorted.map((r) => r.party)).size !== sorted.length) fail('roster lists a party twice');
    const me = sorted.find((r) => r.party === this.party);
    if (!me || me.cPk !== b64(this.c.publicKey) || me.sPk !== b64(this.s.publicKey))
      fail('roster does not carry this party with its own keys');
    checkThreshold(this.params.threshold, sorted.length);
    this.roster = sorted;
    const bShares = await split(this.b, sorted.length, this.params.threshold);
    const sShares = await split(this.s.secretKey, sorted.length, this.params.threshold);
    const shares = sorted.map((v, i) => {
      const payload = new TextEncoder().encode(
        JSON.stringify({ from: this.party, to: v.party, b: b64(bShares[i]!), s: b64(sShares[i]!) }),
      );
      const nonce = shareNonce(this.params.sessionId, this.party, v.party);
      const box = nacl.box(payload, nonce, unb64(v.cPk), this.c.secretKey);
      return { from: this.party, to: v.party, nonce: b64(nonce), box: b64(box) };
    });
    return { party: this.party, selfMaskCommitment: sha256Hex(this.b), shares };
  }

  /**
   * Step 2: masks this party's input. `boxes` are the share boxes addressed to us by the
   * parties that completed step 1 (U2, as the server saw it; must include our own).
   * @throws FedsslError SECAGG_OVERFLOW if the input does not fit the fixed-point range.
   */
  maskedInput(boxes: readonly EncryptedShare[], input: ArrayLike<number>): MaskedInputMsg {
    if (!this.roster) fail('maskedInput before shareKeys');
    if (this.received) fail('maskedInput called twice');
    if (input.length !== this.params.dimension)
      fail(`input has ${input.length} values, expected ${this.params.dimension}`);
    const byParty = new Map(this.roster.map((r) => [r.party, r]));
    const received = new Map<string, EncryptedShare>();
    for (const e of boxes) {
      if (e.to !== this.party || !byParty.has(e.from) || received.has(e.from))
        fail(`unexpected share box from ${e.from} to ${e.to}`);
      received.set(e.from, e);
    }
    if (!received.has(this.party)) fail('U2 does not include this party');
    if (received.size < this.params.threshold)
      throw new FedsslError(
        'SECAGG_TOO_FEW_PARTIES',
        `${received.size} parties shared keys; need ${this.params.threshold}`,
      );
    this.received = received;
    const y = encodeFixed(input, this.roster.length, this.params.fractionBits ?? DEFAULT_FRACTION_BITS);
    applyMask(y, this.b, 1);
    for (const v of received.keys()) {
      if (v === this.party) continue;
      const seed = pairSeed(this.params.sessionId, this.s.secretKey, unb64(byParty.get(v)!.sPk));
      applyMask(y, seed, this.party < v ? 1 : -1);
      seed.fill(0);
    }
    return { party: this.party, masked: y };
  }

  /**
   * Step 3: reveal, for each survivor v ∈ U3, our share of b_v, and for each v ∈ U2 \ U3, our
   * share of s_v^SK. Refuses a survivor list that is not a subset of U2 or smaller than t
   * (revealing more would let the server unmask a single input).
   */
  unmask(survivors: readonly string[]): UnmaskMsg {
    if (!this.received) fail('unmask before maskedInput');
    if (this.unmasked) fail('unmask called twice');
    const u3 = new Set(survivors);
    if (u3.size !== survivors.length) fail('survivor list repeats a party');
    for (const v of u3) if (!this.received.has(v)) fail(`survivor ${v} did not share keys`);
    if (!u3.has(this.party)) fail('this party is not among the survivors');
    if (u3.size < this.params.threshold)
      throw new FedsslError('SECAGG_TOO_FEW_PARTIES', `${u3.size} survivors; need ${this.params.threshold}`);
    this.unmasked = true;
    const byParty = new Map(this.roster!.map((r) => [r.party, r]));
    const selfMaskShares: Record<string, string> = {};
    const keyShares: Record<string, string> = {};
    for (const [v, e] of this.received) {
      const opened = nacl.box.open(
        unb64(e.box),
        unb64(e.nonce),
        unb64(byParty.get(v)!.cPk),
        this.c.secretKey,
      );
      if (!opened) fail(`share box from ${v} does not open`);
      const p = JSON.parse(new TextDecoder().decode(opened)) as {
        from: string;
        to: string;
        b: string;
        s: string;
      };
      if (p.from !== v || p.to !== this.party) fail(`share box from ${v} is not addressed to this party`);
      if (u3.has(v)) selfMaskShares[v] = p.b;
      else keyShares[v] = p.s;
    }
    return { party: this.party, selfMaskShares, keyShares };
  }
}

type Phase = 'advertise' | 'share' | 'masked' | 'unmask' | 'done';

/**
 * The coordinator's side. It relays keys and share boxes, sums the masked inputs, and removes
 * the masks from ≥ t unmasking answers; it never holds an unmasked single input.
 */
export class SecAggServer {
  private phase: Phase = 'advertise';
  private readonly keys = new Map<string, AdvertiseKeysMsg>();
  private readonly shareMsgs = new Map<string, ShareKeysMsg>();
  private readonly masked = new Map<string, Float64Array>();
  private readonly unmasks = new Map<string, UnmaskMsg>();
  private roster: AdvertiseKeysMsg[] = [];

  constructor(private readonly params: SecAggParams) {}

  private expect(phase: Phase): void {
    if (this.phase !== phase) fail(`expected the ${phase} step, the session is at ${this.phase}`);
  }

  receiveAdvertise(m: AdvertiseKeysMsg): void {
    this.expect('advertise');
    if (this.keys.has(m.party)) fail(`${m.party} advertised twice`);
    if (unb64(m.cPk).length !== 32 || unb64(m.sPk).length !== 32)
      fail(`${m.party} advertised malformed keys`);
    this.keys.set(m.party, m);
  }

  /** Ends step 0: the roster U1 every party receives. */
  closeAdvertise(): AdvertiseKeysMsg[] {
    this.expect('advertise');
    this.roster = [...this.keys.values()].sort((a, b) => (a.party < b.party ? -1 : 1));
    checkThreshold(this.params.threshold, this.roster.length);
    this.phase = 'share';
    return this.roster;
  }

  receiveShares(m: ShareKeysMsg): void {
    this.expect('share');
    if (!this.keys.has(m.party) || this.shareMsgs.has(m.party)) fail(`unexpected shares from ${m.party}`);
    const to = m.shares.map((e) => e.to).sort();
    if (
      to.join('\n') !== this.roster.map((r) => r.party).join('\n') ||
      m.shares.some((e) => e.from !== m.party)
    )
      fail(`${m.party} must send exactly one share box to every party of the roster`);
    this.shareMsgs.set(m.party, m);
  }

  /** Ends step 1: for each party of U2, the boxes addressed to it by U2. */
  closeShares(): Map<string, EncryptedShare[]> {
    this.expect('share');
    if (this.shareMsgs.size < this.params.threshold)
      throw new FedsslError(
        'SECAGG_TOO_FEW_PARTIES',
        `${this.shareMsgs.size} parties shared keys; need ${this.params.threshold}`,
      );
    const out = new Map<string, EncryptedShare[]>();
    for (const u of this.shareMsgs.keys()) out.set(u, []);
    for (const m of this.shareMsgs.values())
      for (const e of m.shares) if (out.has(e.to)) out.get(e.to)!.push(e);
    this.phase = 'masked';
    return out;
  }

  receiveMasked(m: MaskedInputMsg): void {
    this.expect('masked');
    if (!this.shareMsgs.has(m.party) || this.masked.has(m.party))
      fail(`unexpected masked input from ${m.party}`);
    if (m.masked.length !== this.params.dimension) fail(`masked input of ${m.party} has the wrong length`);
    this.masked.set(m.party, m.masked);
  }

  /** Ends step 2: the survivors U3, sent to every one of them. */
  closeMasked(): string[] {
    this.expect('masked');
    if (this.masked.size < this.params.threshold)
      throw new FedsslError(
        'SECAGG_TOO_FEW_PARTIES',
        `${this.masked.size} masked inputs; need ${this.params.threshold}`,
      );
    this.phase = 'unmask';
    return [...this.masked.keys()].sort();
  }

  receiveUnmask(m: UnmaskMsg): void {
    this.expect('unmask');
    if (!this.masked.has(m.party) || this.unmasks.has(m.party))
      fail(`unexpected unmasking answer from ${m.party}`);
    this.unmasks.set(m.party, m);
  }

  /** Parties whose inputs are in the sum (U3), once {@link closeMasked} has run. */
  get survivors(): string[] {
    return [...this.masked.keys()].sort();
  }

  /**
   * Ends step 3: Σ_{u∈U3} x_u as real numbers.
   * @throws FedsslError SECAGG_TOO_FEW_PARTIES with fewer than t answers;
   *   SECAGG_RECONSTRUCTION_FAILED when rebuilt secrets do not match their commitments.
   */
  async finish(): Promise<Float64Array> {
    this.expect('unmask');
    const t = this.params.threshold;
    if (this.unmasks.size < t)
      throw new FedsslError('SECAGG_TOO_FEW_PARTIES', `${this.unmasks.size} unmasking answers; need ${t}`);
    const answers = [...this.unmasks.values()];
    const survivors = this.survivors;
    const sum = new Float64Array(this.params.dimension);
    for (const u of survivors) addInto(sum, this.masked.get(u)!);
    const rebuild = async (pick: (a: UnmaskMsg) => string | undefined, what: string): Promise<Uint8Array> => {
      const shares = answers.map(pick).filter((s): s is string => s !== undefined);
      if (shares.length < t)
        throw new FedsslError('SECAGG_TOO_FEW_PARTIES', `${shares.length} shares of ${what}; need ${t}`);
      return combine(shares.map(unb64));
    };
    for (const u of survivors) {
      const b = await rebuild((a) => a.selfMaskShares[u], `the self mask of ${u}`);
      if (sha256Hex(b) !== this.shareMsgs.get(u)!.selfMaskCommitment)
        throw new FedsslError(
          'SECAGG_RECONSTRUCTION_FAILED',
          `the rebuilt self mask of ${u} does not match its commitment`,
        );
      applyMask(sum, b, -1);
    }
    const u3 = new Set(survivors);
    for (const v of this.shareMsgs.keys()) {
      if (u3.has(v)) continue;
      const sk = await rebuild((a) => a.keyShares[v], `the mask key of ${v}`);
      if (b64(nacl.scalarMult.base(sk)) !== this.keys.get(v)!.sPk)
        throw new FedsslError(
          'SECAGG_RECONSTRUCTION_FAILED',
          `the rebuilt mask key of ${v} does not match its public key`,
        );
      // Each survivor u added sign(u,v)·PRG(s_uv); v never sent its input, so remove those.
      for (const u of survivors) {
        const seed = pairSeed(this.params.sessionId, sk, unb64(this.keys.get(u)!.sPk));
        applyMask(sum, seed, u < v ? -1 : 1);
        seed.fill(0);
      }
      sk.fill(0);
    }
    this.phase = 'done';
    return decodeFixed(sum, this.params.fractionBits ?? DEFAULT_FRACTION_BITS);
  }
}
