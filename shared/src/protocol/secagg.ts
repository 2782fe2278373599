import { z } from 'zod';

/**
 * Secure-aggregation steps (shared/src/secagg, docs/privacy.md) as messages. The coordinator
 * drives: it sends `secagg:step` to each site of the round and the site answers in the ack.
 * The masked input itself is not a step: it is the site's update, sealed and uploaded in the
 * usual envelope (plaintext = {@link encodeMaskedInput} bytes).
 */

const b64 = z
  .string()
  .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'expected base64')
  .max(1024);
const party = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/);
const taskId = party;

export const advertiseKeysSchema = z.object({ party, cPk: b64, sPk: b64 }).strict();
export const encryptedShareSchema = z.object({ from: party, to: party, nonce: b64, box: b64 }).strict();
export const shareKeysSchema = z
  .object({
    party,
    selfMaskCommitment: z.string().regex(/^[0-9a-f]{64}$/),
    shares: z.array(encryptedShareSchema).max(255),
  })
  .strict();
export const unmaskSchema = z
  .object({ party, selfMaskShares: z.record(party, b64), keyShares: z.record(party, b64) })
  .strict();

export const secAggStepSchema = z.discriminatedUnion('step', [
  z
    .object({
      taskId,
      step: z.literal('advertise'),
      sessionId: z.string().min(1).max(256),
      threshold: z.number().int().min(2).max(255),
      dimension: z.number().int().min(1),
      fractionBits: z.number().int().min(0).max(40),
    })
    .strict(),
  z
    .object({ taskId, step: z.literal('share'), roster: z.array(advertiseKeysSchema).min(2).max(255) })
    .strict(),
  z.object({ taskId, step: z.literal('boxes'), boxes: z.array(encryptedShareSchema).max(255) }).strict(),
  z.object({ taskId, step: z.literal('unmask'), survivors: z.array(party).min(2).max(255) }).strict(),
]);
export type SecAggStep = z.infer<typeof secAggStepSchema>;

/** The answer to each step, in the same order: keys, shares, nothing, unmasking shares. */
export const secAggAnswerSchema = z.union([
  z.object({ step: z.literal('advertise'), keys: advertiseKeysSchema }).strict(),
  z.object({ step: z.literal('share'), shares: shareKeysSchema }).strict(),
  z.object({ step: z.literal('boxes') }).strict(),
  z.object({ step: z.literal('unmask'), unmask: unmaskSchema }).strict(),
]);
export type SecAggAnswer = z.infer<typeof secAggAnswerSchema>;
