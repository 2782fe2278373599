import { Controller, Get } from '@nestjs/common';
import { Public } from './admin-auth.guard';

@Controller('healthz')
export class HealthController {
  /** Liveness: the process serves HTTP (used by compose/helm probes and the CLI). */
  @Public()
  @Get()
  health(): { status: 'ok' } {
    return { status: 'ok' };
  }
}
