/**
 * The client's address as the rate limits see it. With no trusted proxy (`trustedHops` 0)
 * it is the TCP peer, whatever `X-Forwarded-For` says (a client can write anything there).
 * Behind N reverse proxies, each appending the address it received from, the client is the
 * N-th entry from the right of `X-Forwarded-For` (the same as Express's `trust proxy` set to
 * a hop count); with fewer entries than that, the left-most one.
 *
 * @example
 * clientAddress('10.0.0.2', '198.51.100.9, 10.0.0.1', 2); // '198.51.100.9'
 */
export function clientAddress(
  peer: string | undefined,
  forwardedFor: string | string[] | undefined,
  trustedHops: number,
): string {
  const direct = normalize(peer ?? '') || 'unknown';
  if (trustedHops <= 0 || forwardedFor === undefined) return direct;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor)
    .split(',')
    .map((s) => normalize(s.trim()))
    .filter((s) => s !== '');
  // [peer, right-most forwarded, …, left-most forwarded]: the peer is hop 0.
  const chain = [direct, ...hops.reverse()];
  return chain[Math.min(trustedHops, chain.length - 1)]!;
}

/** IPv4 seen through an IPv6 socket (`::ffff:192.0.2.1`) is the IPv4 address; bounded length for logs. */
function normalize(a: string): string {
  return a.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '').slice(0, 64);
}
