import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { RoundEngine, type RoundEngineEvents } from '../runs/round-engine';
import { PresenceService } from '../sites/presence.service';
import { ConsoleGateway } from './console.gateway';

/**
 * Turns domain events (presence, run and round transitions) into console socket messages.
 * Holds no state and makes no decisions: the browser re-reads the named resource over REST.
 */
@Injectable()
export class ConsoleNotifier implements OnModuleInit, OnModuleDestroy {
  private readonly onOnline = (siteId: string): void => this.gateway.broadcast('site:online', { siteId });
  private readonly onOffline = (siteId: string): void => this.gateway.broadcast('site:offline', { siteId });
  private readonly onRevoked = (siteId: string): void => this.gateway.broadcast('site:revoked', { siteId });
  private readonly onRun = (e: RoundEngineEvents['run'][0]): void =>
    this.gateway.broadcast('run:state', { runId: e.runId, state: e.state });
  private readonly onRound = (e: RoundEngineEvents['round'][0]): void =>
    this.gateway.broadcast('round:state', {
      runId: e.runId,
      round: e.round,
      attempt: e.attempt,
      state: e.state,
    });

  constructor(
    @Inject(ConsoleGateway) private readonly gateway: ConsoleGateway,
    @Inject(PresenceService) private readonly presence: PresenceService,
    @Inject(RoundEngine) private readonly engine: RoundEngine,
  ) {}

  onModuleInit(): void {
    this.presence.on('online', this.onOnline);
    this.presence.on('offline', this.onOffline);
    this.presence.on('revoked', this.onRevoked);
    this.engine.events.on('run', this.onRun);
    this.engine.events.on('round', this.onRound);
  }

  onModuleDestroy(): void {
    this.presence.off('online', this.onOnline);
    this.presence.off('offline', this.onOffline);
    this.presence.off('revoked', this.onRevoked);
    this.engine.events.off('run', this.onRun);
    this.engine.events.off('round', this.onRound);
  }
}
