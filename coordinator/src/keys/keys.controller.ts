import { Body, Controller, Get, HttpCode, Inject, Post } from '@nestjs/common';
import { z } from 'zod';
import type { CoordinatorKeyChain, CoordinatorKeys } from '@fedssl/shared/protocol';
import { Public, Roles } from '../admin/admin-auth.guard';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import { Actor } from '../audit/actor.decorator';
import { AuditLog, type AuditActor } from '../audit/audit-log';
import {
  CoordinatorKeysService,
  type CoordinatorKeyInfo,
  type CoordinatorKeyRotation,
} from './coordinator-keys.service';

/** `POST /coordinator/keys/rotate` body: the old key's grace period (default: FEDSSL_KEY_GRACE_SECONDS). */
export const rotateCoordinatorKeysSchema = z
  .object({
    graceSeconds: z
      .number()
      .int()
      .min(0)
      .max(365 * 86_400)
      .optional(),
  })
  .strict()
  .optional();
export type RotateCoordinatorKeysDto = z.output<typeof rotateCoordinatorKeysSchema>;

@Controller('coordinator')
export class KeysController {
  constructor(
    @Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService,
    @Inject(AuditLog) private readonly audit: AuditLog,
  ) {}

  /** Public: agents and `fedssl-admin models pull` compare the fingerprint out of band. */
  @Public()
  @Get('keys')
  get(): CoordinatorKeys {
    return this.keys.publicKeys();
  }

  /** Public: the current keys and every rotation announcement (each signed by the key it replaced). */
  @Public()
  @Get('keys/chain')
  chain(): CoordinatorKeyChain {
    return this.keys.keyChain();
  }

  /** Every key the coordinator held, with its status (current, grace, expired). */
  @Roles('viewer')
  @Get('keys/history')
  history(): CoordinatorKeyInfo[] {
    return this.keys.history();
  }

  /** New coordinator keys; connected agents receive the announcement at once, others on reconnect. */
  @Roles('admin')
  @Post('keys/rotate')
  @HttpCode(200)
  async rotate(
    @Body(new ZodBodyPipe(rotateCoordinatorKeysSchema)) body: RotateCoordinatorKeysDto,
    @Actor() actor: AuditActor,
  ): Promise<CoordinatorKeyRotation> {
    const rotation = this.keys.rotate(body?.graceSeconds);
    await this.audit.append(actor, 'coordinator.keys-rotated', rotation.keyId, { ...rotation });
    return rotation;
  }
}
