import { Controller, Get, Inject } from '@nestjs/common';
import type { CoordinatorKeys } from '@fedssl/shared/protocol';
import { Public } from '../admin/admin-auth.guard';
import { CoordinatorKeysService } from './coordinator-keys.service';

@Controller('coordinator')
export class KeysController {
  constructor(@Inject(CoordinatorKeysService) private readonly keys: CoordinatorKeysService) {}

  /** Public: agents and `fedssl-admin models pull` compare the fingerprint out of band. */
  @Public()
  @Get('keys')
  get(): CoordinatorKeys {
    return this.keys.publicKeys();
  }
}
