import { generatePartyKeys, toBase64, type PartyKeys } from '@fedssl/shared/crypto';
import { PROTOCOL_VERSION, type EnrollRequest } from '@fedssl/shared/protocol';

/**
 * Test support: the `/enroll` body an agent sends for `token` with the public halves of `party`.
 * @example await enrollment.enroll(enrollRequest(issued.token, keys));
 */
export function enrollRequest(
  token: string,
  party: PartyKeys = generatePartyKeys(),
  agentVersion = '0.1.0',
): EnrollRequest {
  return {
    token,
    signingPublicKey: toBase64(party.signing.publicKey),
    boxPublicKey: toBase64(party.box.publicKey),
    agentVersion,
    protocolVersion: PROTOCOL_VERSION,
  };
}
