import { FedsslError } from '@fedssl/shared/errors';

/** Why a request to the coordinator never got an answer, and what the site's IT can do about it. */
export interface FetchFailure {
  /** e.g. `connection refused (ECONNREFUSED)`. */
  reason: string;
  fix: string;
}

const TLS_UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);

/**
 * Node's fetch rejects with `TypeError: fetch failed` and keeps the reason in `cause` (a
 * system or TLS error code); this turns it into words and a fix. Unknown causes keep their
 * own message.
 *
 * @example
 * describeFetchFailure(e, 'https://coord.example.org') // { reason: 'host name not found (ENOTFOUND)', fix: … }
 */
export function describeFetchFailure(e: unknown, url: string): FetchFailure {
  const err = e as { name?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } };
  const code = typeof err?.cause?.code === 'string' ? err.cause.code : undefined;
  const host = hostOf(url);
  if (err?.name === 'TimeoutError' || code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT')
    return {
      reason: `no answer in time${code ? ` (${code})` : ''}`,
      fix: `a firewall or proxy may drop the traffic: allow outbound connections from this host to ${host}`,
    };
  switch (code) {
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return {
        reason: `host name ${host} not found (${code})`,
        fix: 'check the host name in the coordinator URL and this host’s DNS settings',
      };
    case 'ECONNREFUSED':
      return {
        reason: `connection refused by ${host} (ECONNREFUSED)`,
        fix: 'check the port in the coordinator URL, and ask the consortium admin whether the coordinator is running',
      };
    case 'ECONNRESET':
    case 'EPIPE':
      return {
        reason: `connection cut by ${host} or a device on the way (${code})`,
        fix: 'a proxy or firewall may be closing the connection; check that the URL’s scheme (http/https) matches the coordinator',
      };
    case 'CERT_HAS_EXPIRED':
      return {
        reason: `the coordinator's TLS certificate has expired (${code})`,
        fix: 'ask the consortium admin to renew the certificate',
      };
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return {
        reason: `the coordinator's TLS certificate is not for ${host} (${code})`,
        fix: 'use the host name the certificate was issued for, or ask the consortium admin',
      };
  }
  if (code && TLS_UNTRUSTED.has(code))
    return {
      reason: `the coordinator's TLS certificate is not trusted here (${code})`,
      fix: 'if a private CA or a TLS-inspecting proxy signs it, give that CA to Node: NODE_EXTRA_CA_CERTS=/path/ca.pem',
    };
  const detail = code ?? (typeof err?.cause?.message === 'string' ? err.cause.message : undefined);
  return {
    reason: detail ?? (typeof err?.message === 'string' ? err.message : String(e)),
    fix: 'check the URL, DNS, proxy and that outbound HTTPS to the coordinator is allowed',
  };
}

/** COORDINATOR_UNREACHABLE naming `url`, the cause in words and what to check. */
export function coordinatorUnreachable(url: string, e: unknown): FedsslError {
  const why = describeFetchFailure(e, url);
  return new FedsslError('COORDINATOR_UNREACHABLE', `cannot reach ${url}: ${why.reason}; ${why.fix}`);
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
