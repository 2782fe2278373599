import { z } from 'zod';
import { modelConfigSchema, trainingConfigSchema } from '../model/config';
import { privacyConfigSchema } from '../privacy/config';

/**
 * Every message between a site agent and the coordinator, as runtime schemas.
 * Binary payloads travel as `Uint8Array` (socket.io sends them as binary attachments);
 * keys, nonces and signatures travel as base64 strings.
 */

/** Bumped on any incompatible change; checked when an agent connects. */
export const PROTOCOL_VERSION = 1;

/** socket.io namespace agents connect to. */
export const AGENT_NAMESPACE = '/agents';

/** Largest chunk of update or model bytes in one message (bounds memory per message). */
export const MAX_CHUNK_BYTES = 4 * 1024 * 1024;

const b64 = (bytes?: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'expected base64')
    .refine((s) => bytes === undefined || Buffer.from(s, 'base64').length === bytes, {
      message: `expected base64 of ${bytes} bytes`,
    });
const id = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/, 'expected [A-Za-z0-9._:-]');
const hashHex = z.string().regex(/^[0-9a-f]{64}$|^[0-9a-f]{128}$/, 'expected SHA-256 or SHA-512 hex');
const isoTime = z.string().datetime({ offset: true });
const bytes = z.instanceof(Uint8Array);

export const base64Schema = b64;
export const idSchema = id;
export const hashHexSchema = hashHex;

// ---------------------------------------------------------------- auth handshake

/** Sent by the agent in the socket.io handshake `auth` field. */
export const agentHandshakeSchema = z
  .object({ siteId: id, protocolVersion: z.number().int(), agentVersion: z.string().max(64) })
  .strict();
export type AgentHandshake = z.infer<typeof agentHandshakeSchema>;

/** Coordinator → agent right after connect: sign this nonce to prove the site key. */
export const authChallengeSchema = z
  .object({ nonce: b64(32), serverTime: isoTime, protocolVersion: z.number().int() })
  .strict();
export type AuthChallenge = z.infer<typeof authChallengeSchema>;

/** Agent → coordinator: Ed25519 signature over `authChallengeBytes(nonce, siteId)`. */
export const authResponseSchema = z.object({ signature: b64(64) }).strict();
export type AuthResponse = z.infer<typeof authResponseSchema>;

export const authOkSchema = z.object({ siteId: id, serverTime: isoTime }).strict();
export type AuthOk = z.infer<typeof authOkSchema>;

/** The exact bytes an agent signs to answer a challenge (domain-separated). */
export function authChallengeBytes(nonceB64: string, siteId: string): Uint8Array {
  return new TextEncoder().encode(`fedssl-auth-v${PROTOCOL_VERSION}\n${siteId}\n${nonceB64}`);
}

// ---------------------------------------------------------------- status

export const agentStatusSchema = z
  .object({
    state: z.enum(['idle', 'downloading', 'training', 'uploading']),
    backend: z.string().max(64),
    exampleCount: z.number().int().min(0),
    agentVersion: z.string().max(64),
  })
  .strict();
export type AgentStatus = z.infer<typeof agentStatusSchema>;

// ---------------------------------------------------------------- tasks

/** What the coordinator asks one site to do in one round. Signed by the coordinator. */
export const taskSchema = z
  .object({
    taskId: id,
    runId: id,
    round: z.number().int().min(1),
    siteId: id,
    /** Global model version to start from, and the SHA-256 of its weight bytes. */
    modelVersion: id,
    modelHash: hashHex,
    model: modelConfigSchema,
    training: trainingConfigSchema,
    /** The run's privacy options (absent: none). Signed with the task, so a site can trust them. */
    privacy: privacyConfigSchema.optional(),
    /** Random 32 bytes the update header must echo (binds the update to this task). */
    nonce: b64(32),
    issuedAt: isoTime,
    deadline: isoTime,
  })
  .strict();
export type Task = z.infer<typeof taskSchema>;

export const signedTaskSchema = z
  .object({
    task: taskSchema,
    signature: b64(64),
    /** Which coordinator key signed (absent from coordinators before key rotation). */
    keyId: z.string().max(128).optional(),
  })
  .strict();
export type SignedTask = z.infer<typeof signedTaskSchema>;

export const taskFailedSchema = z
  .object({ taskId: id, code: z.string().max(64), message: z.string().max(1000) })
  .strict();
export type TaskFailed = z.infer<typeof taskFailedSchema>;

export const taskCancelSchema = z.object({ taskId: id, reason: z.string().max(500) }).strict();
export type TaskCancel = z.infer<typeof taskCancelSchema>;

export const taskProgressSchema = z
  .object({
    taskId: id,
    step: z.number().int().min(0),
    totalSteps: z.number().int().min(0),
    loss: z.number(),
  })
  .strict();
export type TaskProgress = z.infer<typeof taskProgressSchema>;

// ---------------------------------------------------------------- model download

/** The input a published encoder expects. */
export const modelInputSchema = z
  .object({
    channels: z.literal(1),
    /** Side of the square image, pixels (the run's global view size). */
    size: z.number().int().min(1),
    /** How pixel values were scaled for training, in words. */
    normalization: z.string().max(500),
  })
  .strict();
export type ModelInput = z.infer<typeof modelInputSchema>;

/**
 * A JSON object carried as signed, without schema defaults filled in: a later default added
 * to the training or strategy schema must not change (and so un-sign) an old manifest as read.
 */
const jsonObject = z.record(z.string().max(128), z.unknown());

/**
 * The run settings behind a version: the local training hyperparameters sent in every task
 * (including the augmentation recipe), the aggregation strategy with every option, and the seed
 * of the initial weights. Parse `training` with `trainingConfigSchema` to read it typed.
 */
export const modelHyperparametersSchema = z
  .object({
    training: jsonObject,
    strategy: z.object({ name: z.string().max(64) }).catchall(z.unknown()),
    seed: z.number().int().min(0),
  })
  .strict();
export type ModelHyperparameters = z.infer<typeof modelHyperparametersSchema>;

/** Signed description of one published global model version (weights are fetched in chunks). */
export const modelManifestSchema = z
  .object({
    version: id,
    runId: id.nullable(),
    round: z.number().int().min(0),
    model: modelConfigSchema,
    /** SHA-256 hex of the encoded weight bytes. */
    weightsSha256: z.string().regex(/^[0-9a-f]{64}$/),
    weightsBytes: z.number().int().min(0),
    parentVersion: id.nullable(),
    parentSha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .nullable(),
    sites: z.array(z.object({ siteId: id, exampleCount: z.number().int().min(0) }).strict()),
    strategy: z.string().max(64),
    createdAt: isoTime,
    /** How to feed the encoder (absent in manifests published before it was added). */
    input: modelInputSchema.optional(),
    /** The run settings that produced this version (absent before it was added, and for run-less versions). */
    hyperparameters: modelHyperparametersSchema.optional(),
  })
  .strict();
export type ModelManifest = z.infer<typeof modelManifestSchema>;

export const signedModelManifestSchema = z
  .object({ manifest: modelManifestSchema, signature: b64(64), keyId: z.string().max(128) })
  .strict();
export type SignedModelManifest = z.infer<typeof signedModelManifestSchema>;

export const modelManifestRequestSchema = z.object({ version: id }).strict();
export const modelChunkRequestSchema = z
  .object({
    version: id,
    offset: z.number().int().min(0),
    length: z.number().int().min(1).max(MAX_CHUNK_BYTES),
  })
  .strict();
export type ModelChunkRequest = z.infer<typeof modelChunkRequestSchema>;

// ---------------------------------------------------------------- update upload

/**
 * The signed header of an update envelope (ARCHITECTURE.md §4). The site signs the
 * canonical JSON of this object; every field the coordinator relies on is inside it.
 */
export const updateHeaderSchema = z
  .object({
    protocolVersion: z.number().int(),
    siteId: id,
    runId: id,
    round: z.number().int().min(1),
    taskId: id,
    taskNonce: b64(32),
    baseModelHash: hashHex,
    exampleCount: z.number().int(),
    metrics: z.record(z.string().max(64), z.number()),
    createdAt: isoTime,
    // --- envelope fields, filled in by seal()
    chunkCount: z.number().int().min(1),
    chunkSize: z.number().int().min(1).max(MAX_CHUNK_BYTES),
    plaintextBytes: z.number().int().min(0),
    /** 16 random bytes; chunk nonce = prefix ‖ u32be(index) ‖ u32be(count). */
    noncePrefix: b64(16),
    /** Ephemeral X25519 public key and nonce that sealed the content key with `box`. */
    ephemeralPublicKey: b64(32),
    keyBoxNonce: b64(24),
    /** The content key sealed to the coordinator (nacl.box output, 48 bytes). */
    keyBox: b64(48),
    /** SHA-512 hex over all ciphertext chunks in order. */
    ciphertextSha512: z.string().regex(/^[0-9a-f]{128}$/),
  })
  .strict();
export type UpdateHeader = z.infer<typeof updateHeaderSchema>;

export const uploadBeginSchema = z.object({ header: updateHeaderSchema, signature: b64(64) }).strict();
export type UploadBegin = z.infer<typeof uploadBeginSchema>;

export const uploadChunkSchema = z
  .object({ uploadId: id, index: z.number().int().min(0), data: bytes })
  .strict()
  .refine((c) => c.data.byteLength <= MAX_CHUNK_BYTES + 16, { message: 'chunk larger than MAX_CHUNK_BYTES' });
export type UploadChunk = z.infer<typeof uploadChunkSchema>;

export const uploadCommitSchema = z.object({ uploadId: id }).strict();
export type UploadCommit = z.infer<typeof uploadCommitSchema>;

// ---------------------------------------------------------------- acknowledgements

export interface AckError {
  ok: false;
  error: { code: string; message: string };
}
export type Ack<T extends object = Record<never, never>> = ({ ok: true } & T) | AckError;

// ---------------------------------------------------------------- enrollment (HTTP, once per site)

/** `POST /api/v1/enroll`: the agent presents its one-time token and registers its public keys. */
export const enrollRequestSchema = z
  .object({
    token: z.string().min(16).max(256),
    signingPublicKey: b64(32),
    boxPublicKey: b64(32),
    agentVersion: z.string().max(64),
    protocolVersion: z.number().int(),
  })
  .strict();
export type EnrollRequest = z.infer<typeof enrollRequestSchema>;

/** The coordinator's public keys, pinned by the agent at enrollment. */
export const coordinatorKeysSchema = z
  .object({
    keyId: z.string().max(128),
    signingPublicKey: b64(32),
    boxPublicKey: b64(32),
    fingerprint: z.string().max(200),
  })
  .strict();
export type CoordinatorKeys = z.infer<typeof coordinatorKeysSchema>;

export const enrollResponseSchema = z
  .object({
    siteId: id,
    siteName: z.string().max(128),
    coordinator: coordinatorKeysSchema,
    protocolVersion: z.number().int(),
  })
  .strict();
export type EnrollResponse = z.infer<typeof enrollResponseSchema>;
