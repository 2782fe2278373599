import { Injectable } from '@nestjs/common';
import { EventEmitter } from 'node:events';

/**
 * Which sites have an authenticated agent connection right now. Connection state only:
 * no round state lives here. A site may briefly hold two connections (reconnect before the
 * old socket times out), so it counts as online while at least one is open.
 *
 * Events: `'online'(siteId)` on the first connection, `'offline'(siteId)` when the last one
 * closes, `'revoked'(siteId)` when an admin revokes the site (the gateway disconnects it),
 * `'key-expired'(siteId, keyId)` when a replaced site key's grace period ends (the gateway
 * disconnects the connections that authenticated with it).
 */
@Injectable()
export class PresenceService extends EventEmitter {
  private readonly connections = new Map<string, Set<string>>();

  /** Records an authenticated connection; emits `'online'` if the site was offline. */
  markOnline(siteId: string, connectionId: string): void {
    let set = this.connections.get(siteId);
    const wasOnline = set !== undefined && set.size > 0;
    if (!set) {
      set = new Set();
      this.connections.set(siteId, set);
    }
    set.add(connectionId);
    if (!wasOnline) this.emit('online', siteId);
  }

  /** Forgets a connection; emits `'offline'` when it was the site's last one. Unknown ids are ignored. */
  markOffline(siteId: string, connectionId: string): void {
    const set = this.connections.get(siteId);
    if (!set || !set.delete(connectionId)) return;
    if (set.size === 0) {
      this.connections.delete(siteId);
      this.emit('offline', siteId);
    }
  }

  isOnline(siteId: string): boolean {
    return (this.connections.get(siteId)?.size ?? 0) > 0;
  }

  /** Online site ids, sorted (deterministic site selection downstream). */
  onlineSiteIds(): string[] {
    return [...this.connections.keys()].sort();
  }

  /** Tells listeners (the gateway) to drop the site's connections now. */
  announceRevoked(siteId: string): void {
    this.emit('revoked', siteId);
  }

  /** Tells listeners (the gateway) to drop connections authenticated with a site key whose grace period ended. */
  announceKeyExpired(siteId: string, keyId: string): void {
    this.emit('key-expired', siteId, keyId);
  }
}
