import type { PipeTransform } from '@nestjs/common';
import type { z } from 'zod';
import { FedsslError, type ErrorCode } from '@fedssl/shared/errors';

/** `a.b.0: message; c: message` — the exact form the REST API returns for invalid input. */
export function formatZodIssues(
  issues: readonly { path: readonly PropertyKey[]; message: string }[],
): string {
  return issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ');
}

/**
 * Validates (and defaults) a request body with a zod schema; failures become a 400 with
 * `code` (PROTOCOL_INVALID_MESSAGE unless the resource has its own, e.g. RUN_CONFIG_INVALID).
 *
 * @example
 * create(@Body(new ZodBodyPipe(createTokenSchema)) body: CreateTokenDto) { … }
 */
export class ZodBodyPipe<S extends z.ZodType> implements PipeTransform<unknown, z.output<S>> {
  constructor(
    /** Public so the OpenAPI document can describe the body from it. */
    readonly schema: S,
    private readonly code: ErrorCode = 'PROTOCOL_INVALID_MESSAGE',
  ) {}

  transform(value: unknown): z.output<S> {
    const parsed = this.schema.safeParse(value);
    if (!parsed.success) throw new FedsslError(this.code, formatZodIssues(parsed.error.issues));
    return parsed.data;
  }
}
