/**
 * `@fedssl/shared/crypto`: keys, signatures, signed coordinator documents and the update
 * envelope. Loads tweetnacl and node:crypto only (never TensorFlow).
 */
export { assertBytes, concatBytes, equalBytes, fromBase64, toBase64, toHex, utf8 } from './bytes';
export { bulkBackend, setBulkBackend, type BulkBackendChoice, type BulkBackendName } from './bulk-backend';
export {
  setSignatureBackend,
  signatureBackend,
  type SignatureBackendChoice,
  type SignatureBackendName,
} from './ed25519';
export { createSha256, createSha512, sha256Hex, sha512Hex, type IncrementalHash } from './hash';
export { canonicalJson } from './canonical-json';
export {
  BOX_PUBLIC_KEY_BYTES,
  BOX_SECRET_KEY_BYTES,
  SIGNATURE_BYTES,
  SIGNING_PUBLIC_KEY_BYTES,
  SIGNING_SECRET_KEY_BYTES,
  boxKeyPairFromSecretKey,
  fingerprint,
  generatePartyKeys,
  keyId,
  signingKeyPairFromSecretKey,
  type KeyPair,
  type PartyKeys,
} from './keys';
export { SIGNING_DOMAINS, signBytes, signJson, verifyBytes, verifyJson, type SigningDomain } from './sign';
export {
  describeCoordinatorKeys,
  followCoordinatorKeyChain,
  signCoordinatorKeyAnnouncement,
  signModelManifest,
  signSiteKeyRotation,
  signTask,
  verifySignedModelManifest,
  verifySignedSiteKeyRotation,
  verifySignedTask,
  type FollowedKeyChain,
} from './documents';
export {
  UpdateOpener,
  expectedChunkCount,
  keyBoxOpensWith,
  openUpdate,
  parseUpdateHeader,
  sealUpdate,
  updateHeaderSignedBy,
  verifyUpdateHeader,
  type OpenUpdateArgs,
  type SealUpdateArgs,
  type SealedUpdate,
  type UpdateEnvelopeField,
  type UpdateHeaderFields,
} from './envelope';
