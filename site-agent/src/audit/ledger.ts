import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { FedsslError } from '@fedssl/shared/errors';
import { agentPaths } from '../config/agent-config';
import { appendSecureLine } from '../config/secure-files';

/**
 * The agent's own append-only record of what left (uploads) and what came in (model
 * downloads), as JSON Lines in `<home>/ledger.jsonl`, for hospital IT to read. It holds
 * run/round/task ids, sizes and hashes only: never patient data, file paths or tensors.
 */

const isoTime = z.string().datetime({ offset: true });

export const uploadLedgerEntrySchema = z
  .object({
    kind: z.literal('upload'),
    time: isoTime,
    runId: z.string(),
    round: z.number().int(),
    taskId: z.string(),
    modelVersion: z.string(),
    /** Bytes put on the wire: all ciphertext chunks plus the signed header JSON. */
    bytesSent: z.number().int().min(0),
    /** SHA-256 of the encoded (plaintext) delta, before encryption. */
    plaintextSha256: z.string(),
    ciphertextSha512: z.string(),
    /** Names of the tensors uploaded (what was shared). */
    tensors: z.array(z.string()),
    exampleCount: z.number().int().min(0),
    accepted: z.boolean(),
    updateId: z.string().optional(),
    /**
     * Set when this upload was resumed from the outbox after the agent restarted: the first
     * chunk the coordinator still needed (the ones before were not sent again).
     */
    resumedFromChunk: z.number().int().min(0).optional(),
    error: z.object({ code: z.string(), message: z.string() }).strict().optional(),
  })
  .strict();
export type UploadLedgerEntry = z.infer<typeof uploadLedgerEntrySchema>;

export const downloadLedgerEntrySchema = z
  .object({
    kind: z.literal('download'),
    time: isoTime,
    runId: z.string(),
    round: z.number().int(),
    taskId: z.string(),
    modelVersion: z.string(),
    modelSha256: z.string(),
    bytes: z.number().int().min(0),
    /** The manifest's signature and the weights' hash both checked. */
    verified: z.boolean(),
  })
  .strict();
export type DownloadLedgerEntry = z.infer<typeof downloadLedgerEntrySchema>;

/** Differential privacy applied to a task's delta before it was sealed (docs/privacy.md). */
export const privacyLedgerEntrySchema = z
  .object({
    kind: z.literal('privacy'),
    time: isoTime,
    runId: z.string(),
    round: z.number().int(),
    taskId: z.string(),
    dp: z
      .object({
        clipNorm: z.number(),
        noiseMultiplier: z.number(),
        /** Standard deviation of the noise added per coordinate (σ·C). */
        noiseStd: z.number(),
        /** Delta norm before clipping and the factor applied (1 = not clipped). */
        normBefore: z.number(),
        clipFactor: z.number(),
      })
      .strict(),
  })
  .strict();
export type PrivacyLedgerEntry = z.infer<typeof privacyLedgerEntrySchema>;

export const ledgerEntrySchema = z.discriminatedUnion('kind', [
  uploadLedgerEntrySchema,
  downloadLedgerEntrySchema,
  privacyLedgerEntrySchema,
]);
export type LedgerEntry = z.infer<typeof ledgerEntrySchema>;

/**
 * Append one entry to `<home>/ledger.jsonl` (file 0600, fsynced).
 * @throws FedsslError AGENT_CONFIG_INVALID if the entry does not match the schema (a bug).
 */
export async function appendLedger(home: string, entry: LedgerEntry): Promise<void> {
  const parsed = ledgerEntrySchema.safeParse(entry);
  if (!parsed.success)
    throw new FedsslError(
      'AGENT_CONFIG_INVALID',
      `ledger entry invalid: ${parsed.error.issues[0]?.message ?? 'unknown'}`,
    );
  await appendSecureLine(agentPaths(home).ledger, JSON.stringify(parsed.data));
}

/**
 * Read every entry of the ledger, oldest first ([] when there is none yet). A torn last
 * line (power cut during an append) is ignored; any other malformed line is an error.
 * @throws FedsslError AGENT_CONFIG_INVALID naming the line number.
 */
export async function readLedger(home: string): Promise<LedgerEntry[]> {
  let text: string;
  try {
    text = await readFile(agentPaths(home).ledger, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const lines = text.split('\n');
  const torn = !text.endsWith('\n') ? lines.length - 1 : -1;
  const out: LedgerEntry[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      if (i === torn) return;
      throw new FedsslError('AGENT_CONFIG_INVALID', `ledger.jsonl line ${i + 1} is not valid JSON`);
    }
    const parsed = ledgerEntrySchema.safeParse(value);
    if (!parsed.success)
      throw new FedsslError(
        'AGENT_CONFIG_INVALID',
        `ledger.jsonl line ${i + 1}: ${parsed.error.issues[0]?.message ?? 'invalid entry'}`,
      );
    out.push(parsed.data);
  });
  return out;
}
