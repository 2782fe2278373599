import { z } from 'zod';
import {
  coordinatorKeyChainSchema,
  coordinatorKeysSchema,
  enrollResponseSchema,
  signedModelManifestSchema,
  siteKeyRotationResponseSchema,
} from '@fedssl/shared/protocol';
import { ADMIN_ROLES } from '../admin/admin-token.repository';
import { modelVersionResponseSchema } from '../models/dtos/model-version.dto';
import { runConfigSchema } from '../runs/run-config';

/**
 * Request and response bodies of every REST operation, for the OpenAPI document. Request
 * bodies are generated from the zod schemas the handlers validate with (read from their
 * `ZodBodyPipe`, so they cannot drift); responses come from the shared zod schemas where they
 * exist and are written here for the coordinator's own records (`test/api` checks real
 * responses against them).
 */

/** A JSON Schema object (the OpenAPI 3.1 dialect). */
export type JsonSchema = Record<string, unknown>;

export const fromZod = (schema: z.ZodType, io: 'input' | 'output'): JsonSchema => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as JsonSchema;
  return rest;
};

// Small builders: every listed property is required, nothing else is allowed.
const str: JsonSchema = { type: 'string' };
const int: JsonSchema = { type: 'integer' };
const num: JsonSchema = { type: 'number' };
const bool: JsonSchema = { type: 'boolean' };
const nullable = (s: JsonSchema): JsonSchema => ({ anyOf: [s, { type: 'null' }] });
const oneOf = (...values: string[]): JsonSchema => ({ type: 'string', enum: values });
const arr = (items: JsonSchema): JsonSchema => ({ type: 'array', items });
const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
function obj(props: Record<string, JsonSchema>, optional: Record<string, JsonSchema> = {}): JsonSchema {
  return {
    type: 'object',
    properties: { ...props, ...optional },
    required: Object.keys(props),
    additionalProperties: false,
  };
}
const record = (values: JsonSchema): JsonSchema => ({ type: 'object', additionalProperties: values });

const siteKey = obj({
  keyId: str,
  signingPublicKey: str,
  boxPublicKey: str,
  createdAt: str,
  retiredAt: nullable(str),
  validUntil: nullable(str),
  status: oneOf('current', 'grace', 'expired'),
});
const adminToken = {
  id: str,
  name: str,
  role: oneOf(...ADMIN_ROLES),
  createdAt: str,
  revokedAt: nullable(str),
  lastUsedAt: nullable(str),
  expiresAt: nullable(str),
};
const runRecord = {
  id: str,
  name: str,
  state: oneOf('created', 'running', 'paused', 'completed', 'cancelled', 'failed'),
  config: fromZod(runConfigSchema, 'output'),
  currentRound: int,
  initialModelVersion: nullable(str),
  latestModelVersion: nullable(str),
  createdAt: str,
  updatedAt: str,
  reason: nullable(str),
};
const participant = obj({
  siteId: str,
  siteName: nullable(str),
  state: oneOf('offered', 'accepted', 'rejected', 'failed', 'dropped'),
  exampleCount: nullable(int),
  metrics: nullable(record(num)),
  reason: nullable(str),
});
const roundView = obj({
  round: int,
  attempt: int,
  state: oneOf('open', 'training', 'aggregating', 'published', 'failed'),
  startedAt: str,
  deadline: nullable(str),
  publishedAt: nullable(str),
  modelVersion: nullable(str),
  modelSha256: nullable(str),
  reason: nullable(str),
  participants: arr(participant),
});
const check = obj({ ok: bool }, { error: str });
const retentionDecision = obj({
  version: str,
  runId: nullable(str),
  round: int,
  action: oneOf('keep', 'prune', 'pruned'),
  reasons: arr(oneOf('latest-of-run', 'within-last-n', 'marked-keep', 'active-run')),
  weightsBytes: int,
});

/** Named schemas, referenced from operations as `#/components/schemas/<name>`. */
export const COMPONENT_SCHEMAS: Record<string, JsonSchema> = {
  Error: obj({ error: obj({ code: str, message: str }, { details: { type: 'object' } }) }),
  CoordinatorKeys: fromZod(coordinatorKeysSchema, 'output'),
  CoordinatorKeyChain: fromZod(coordinatorKeyChainSchema, 'output'),
  CoordinatorKeyInfo: obj({
    keyId: str,
    signingPublicKey: str,
    boxPublicKey: str,
    fingerprint: str,
    createdAt: str,
    retiredAt: nullable(str),
    validUntil: nullable(str),
    status: oneOf('current', 'grace', 'expired'),
  }),
  CoordinatorKeyRotation: obj({
    previousKeyId: str,
    keyId: str,
    fingerprint: str,
    previousKeyValidUntil: str,
  }),
  EnrollResponse: fromZod(enrollResponseSchema, 'output'),
  EnrollmentToken: obj({ token: str, siteId: str, siteName: str, expiresAt: str }),
  EnrollmentTokenSummary: obj({
    siteId: str,
    siteName: str,
    createdAt: str,
    expiresAt: str,
    usedAt: nullable(str),
    state: oneOf('pending', 'used', 'expired', 'revoked'),
  }),
  SiteKey: siteKey,
  Site: obj({
    id: str,
    name: str,
    signingPublicKey: str,
    boxPublicKey: str,
    status: oneOf('pending', 'enrolled', 'revoked'),
    createdAt: str,
    enrolledAt: nullable(str),
    revokedAt: nullable(str),
    lastSeenAt: nullable(str),
    agentVersion: nullable(str),
    backend: nullable(str),
    exampleCount: nullable(int),
    keys: arr(ref('SiteKey')),
    online: bool,
  }),
  SiteKeyRotationResponse: fromZod(siteKeyRotationResponseSchema, 'output'),
  AdminToken: obj(adminToken),
  AdminTokenCreated: obj({ ...adminToken, token: str }),
  AuditEntry: obj({
    seq: int,
    at: str,
    actor: str,
    action: str,
    target: str,
    details: { type: 'object' },
    prevHash: str,
    hash: str,
  }),
  AuditPage: obj({ entries: arr(ref('AuditEntry')), nextAfter: nullable(int) }),
  AuditVerification: obj({ ok: bool, entries: int }, { firstBadSeq: int, reason: str }),
  SignedModelManifest: fromZod(signedModelManifestSchema, 'output'),
  ModelVersion: fromZod(modelVersionResponseSchema, 'output'),
  PruneResult: obj({
    dryRun: bool,
    retain: int,
    decisions: arr(retentionDecision),
    pruned: arr(str),
    bytesFreed: int,
  }),
  ModelMark: obj({
    version: str,
    keep: bool,
    keptBy: nullable(str),
    keptAt: nullable(str),
    prunedAt: nullable(str),
    prunedBy: nullable(str),
    bytesFreed: nullable(int),
  }),
  Run: obj(runRecord),
  RunDetail: obj({
    ...runRecord,
    rounds: arr(roundView),
    // ε accounting of a differentially private run (see docs/privacy), else null.
    privacy: nullable({ type: 'object' }),
  }),
  Health: obj({ status: oneOf('ok') }),
  Readiness: obj({
    status: oneOf('ready', 'not ready'),
    checks: obj({ store: check, dataDir: check, keys: check }),
  }),
};

/** What one operation takes and answers. */
export interface OperationBodies {
  /**
   * JSON request body, for handlers that validate in their service rather than with a
   * `ZodBodyPipe` (the pipe's schema is found by {@link buildOpenApiDocument} itself).
   */
  request?: JsonSchema;
  /** Success status → its body: a JSON schema, or a non-JSON media type with its schema. */
  responses: Record<number, { description: string; schema: JsonSchema; mediaTypes?: string[] }>;
}

const json = (description: string, schema: JsonSchema) => ({ description, schema });

/** Every operation by its OpenAPI operationId (`Controller_method`, or `ops_*` for the root routes). */
export const OPERATION_BODIES: Record<string, OperationBodies> = {
  KeysController_get: { responses: { 200: json('the current coordinator keys', ref('CoordinatorKeys')) } },
  KeysController_chain: {
    responses: {
      200: json('current keys and every signed rotation announcement', ref('CoordinatorKeyChain')),
    },
  },
  KeysController_history: {
    responses: { 200: json('every key the coordinator held', arr(ref('CoordinatorKeyInfo'))) },
  },
  KeysController_rotate: {
    responses: { 200: json('the rotation', ref('CoordinatorKeyRotation')) },
  },
  EnrollmentController_enroll: {
    responses: { 200: json('enrolled; pin these coordinator keys', ref('EnrollResponse')) },
  },
  EnrollmentController_issue: {
    responses: { 201: json('the one-time token (shown once)', ref('EnrollmentToken')) },
  },
  EnrollmentController_listTokens: {
    responses: {
      200: json('issued tokens, newest first (never the secret)', arr(ref('EnrollmentTokenSummary'))),
    },
  },
  EnrollmentController_expireToken: {
    responses: { 200: json('the token, now expired', ref('EnrollmentTokenSummary')) },
  },
  SitesController_list: { responses: { 200: json('all sites', arr(ref('Site'))) } },
  SitesController_keys: { responses: { 200: json("the site's keys, oldest first", arr(ref('SiteKey'))) } },
  SitesController_rotateKeys: {
    responses: { 200: json('the new key id and the old key’s grace period', ref('SiteKeyRotationResponse')) },
  },
  SitesController_revoke: {
    responses: { 200: json('the revoked site', ref('Site')) },
  },
  AdminTokensController_create: {
    responses: { 201: json('the token (shown once) and its record', ref('AdminTokenCreated')) },
  },
  AdminTokensController_list: { responses: { 200: json('all admin tokens', arr(ref('AdminToken'))) } },
  AdminTokensController_me: { responses: { 200: json("the caller's own token", ref('AdminToken')) } },
  AdminTokensController_revoke: { responses: { 200: json('the revoked token', ref('AdminToken')) } },
  HealthController_health: { responses: { 200: json('alive', ref('Health')) } },
  AuditController_list: { responses: { 200: json('a page of entries', ref('AuditPage')) } },
  AuditController_verify: { responses: { 200: json('the chain check', ref('AuditVerification')) } },
  ModelsController_list: {
    responses: {
      200: json(
        'every published version, oldest first: its signed manifest and whether its weights are still there',
        arr(ref('ModelVersion')),
      ),
    },
  },
  ModelsController_get: {
    responses: {
      200: json('the signed manifest and whether the weights are still there', ref('ModelVersion')),
    },
  },
  ModelsController_weights: {
    responses: {
      200: {
        description: 'the encoded weights (fedssl-weights/1); check their SHA-256 against the manifest',
        mediaTypes: ['application/octet-stream'],
        schema: { type: 'string', format: 'binary' },
      },
    },
  },
  ModelExportsController_download: {
    responses: {
      200: {
        description:
          'tfjs: a zip of model.json, weights.bin, manifest.json and the model card (for the query parameter inputSize: a graph for other input sizes); safetensors: the PyTorch file; card: MODEL_CARD.md',
        mediaTypes: ['application/zip', 'application/octet-stream', 'text/markdown'],
        schema: { type: 'string', format: 'binary' },
      },
    },
  },
  RetentionController_prune: {
    responses: { 200: json('every version with its decision', ref('PruneResult')) },
  },
  RetentionController_keep: {
    responses: { 200: json("the version's marks", ref('ModelMark')) },
  },
  RunsController_create: {
    request: fromZod(runConfigSchema, 'input'),
    responses: { 201: json('the created run', ref('Run')) },
  },
  RunsController_list: { responses: { 200: json('all runs, oldest first', arr(ref('Run'))) } },
  RunsController_get: { responses: { 200: json('the run with its rounds', ref('RunDetail')) } },
  RunsController_start: { responses: { 200: json('the started run', ref('Run')) } },
  RunsController_pause: { responses: { 200: json('the paused run', ref('Run')) } },
  RunsController_resume: { responses: { 200: json('the resumed run', ref('Run')) } },
  RunsController_cancel: { responses: { 200: json('the cancelled run', ref('Run')) } },
  ops_health: { responses: { 200: json('alive', ref('Health')) } },
  ops_ready: {
    responses: {
      200: json('ready', ref('Readiness')),
      503: json('not ready; each check says why', ref('Readiness')),
    },
  },
  ops_metrics: {
    responses: {
      200: {
        description: 'Prometheus text exposition',
        mediaTypes: ['text/plain'],
        schema: { type: 'string' },
      },
    },
  },
};
