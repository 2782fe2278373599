import { FedsslError } from '../errors';
import {
  modelManifestSchema,
  taskSchema,
  type ModelManifest,
  type SignedModelManifest,
  type SignedTask,
  type Task,
} from '../protocol/messages';
import { signDomainJson, verifyDomainJson } from './sign';

/**
 * Documents the coordinator signs: tasks (what to train) and model manifests (what was
 * published). The signature covers the canonical JSON of the document in its own domain.
 */

/**
 * Drop object properties whose value is `undefined` (recursively). zod keeps an optional key
 * that was present as `undefined`; JSON transport would drop it, and canonicalJson refuses
 * it, so we normalize before signing.
 */
function withoutUndefined<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => withoutUndefined(v)) as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = withoutUndefined(v);
    return out as T;
  }
  return value;
}

function issues(error: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}

/**
 * Sign a task with the coordinator's Ed25519 secret key. The task is schema-checked first
 * (defaults filled in), and the returned `task` is exactly what was signed.
 * @throws FedsslError PROTOCOL_INVALID_MESSAGE if the task does not match the schema.
 */
export function signTask(task: Task, secretKey: Uint8Array): SignedTask {
  const parsed = taskSchema.safeParse(task);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `task does not match the schema: ${issues(parsed.error)}`,
    );
  }
  const clean = withoutUndefined(parsed.data);
  return { task: clean, signature: signDomainJson('task', clean, secretKey) };
}

/**
 * Check a signed task against the pinned coordinator key and return the parsed task.
 * The signature is checked over the task exactly as received, before any parsing.
 * @throws FedsslError TASK_SIGNATURE_INVALID on a bad signature or a malformed envelope;
 *   PROTOCOL_INVALID_MESSAGE if a correctly signed task does not match the schema.
 */
export function verifySignedTask(signed: SignedTask, coordinatorPublicKey: Uint8Array): Task {
  const st = signed as unknown as { task?: unknown; signature?: unknown } | null;
  if (
    typeof st !== 'object' ||
    st === null ||
    typeof st.signature !== 'string' ||
    !verifyDomainJson('task', st.task, st.signature, coordinatorPublicKey)
  ) {
    throw new FedsslError(
      'TASK_SIGNATURE_INVALID',
      'task signature does not verify against the pinned coordinator key',
    );
  }
  const parsed = taskSchema.safeParse(st.task);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `signed task does not match the schema: ${issues(parsed.error)}`,
    );
  }
  return parsed.data;
}

/**
 * Sign a model manifest. `keyId` (see `keyId()`) names the signing key so that a verifier
 * holding several coordinator keys can pick one; it is a hint and is not signed.
 * @throws FedsslError PROTOCOL_INVALID_MESSAGE if the manifest does not match the schema.
 */
export function signModelManifest(
  manifest: ModelManifest,
  secretKey: Uint8Array,
  keyId: string,
): SignedModelManifest {
  const parsed = modelManifestSchema.safeParse(manifest);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `model manifest does not match the schema: ${issues(parsed.error)}`,
    );
  }
  const clean = withoutUndefined(parsed.data);
  return { manifest: clean, signature: signDomainJson('manifest', clean, secretKey), keyId };
}

/**
 * Check a signed model manifest and return the parsed manifest.
 * @throws FedsslError MANIFEST_SIGNATURE_INVALID on a bad signature or malformed envelope;
 *   PROTOCOL_INVALID_MESSAGE if a correctly signed manifest does not match the schema.
 */
export function verifySignedModelManifest(
  signed: SignedModelManifest,
  coordinatorPublicKey: Uint8Array,
): ModelManifest {
  const sm = signed as unknown as { manifest?: unknown; signature?: unknown } | null;
  if (
    typeof sm !== 'object' ||
    sm === null ||
    typeof sm.signature !== 'string' ||
    !verifyDomainJson('manifest', sm.manifest, sm.signature, coordinatorPublicKey)
  ) {
    throw new FedsslError(
      'MANIFEST_SIGNATURE_INVALID',
      'model manifest signature does not verify against the pinned coordinator key',
    );
  }
  const parsed = modelManifestSchema.safeParse(sm.manifest);
  if (!parsed.success) {
    throw new FedsslError(
      'PROTOCOL_INVALID_MESSAGE',
      `signed model manifest does not match the schema: ${issues(parsed.error)}`,
    );
  }
  return parsed.data;
}
