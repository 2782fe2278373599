/** Pooled buffers are sized in steps of this, so updates a few bytes apart (int8 scales) share them. */
const GRAIN = 64 * 1024;

/**
 * Plaintext buffers of opened updates, reused from one round to the next. A fresh 50 MB
 * buffer per update costs more than decrypting into it on this kind of VM (a page fault per
 * 4 KiB page on first write, unmapping when it is freed, and the garbage collector's work
 * for external memory): reusing them cut the ResNet-18 ingest by ~40 ms of ~220 per update.
 *
 * Only buffers this pool handed out come back, and only when their owner is done with every
 * view of them: after aggregation (the engine, once the strategy has returned) or when a
 * decode did not keep a view. What is idle is bounded by `room`, which {@link OpenedUpdates}
 * ties to its memory budget.
 */
export class PlaintextPool {
  /** Idle buffers, oldest first. */
  private readonly idle: ArrayBuffer[] = [];
  private readonly issued = new WeakSet<ArrayBuffer>();
  private idleTotal = 0;

  /** `room(bytes)`: whether this many more idle bytes may be kept now. */
  constructor(private readonly room: (bytes: number) => boolean) {}

  /** Bytes held idle. */
  get idleBytes(): number {
    return this.idleTotal;
  }

  /**
   * A buffer of exactly `bytes` bytes: a view of an idle buffer that fits (its contents are
   * whatever the last update left: the caller overwrites all of them; the spare tail is
   * zeroed so no earlier update lingers past the view), else a new one.
   */
  acquire(bytes: number): Uint8Array {
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) {
      const cap = this.idle[i]!.byteLength;
      if (cap >= bytes && cap - bytes < GRAIN && (best < 0 || cap < this.idle[best]!.byteLength)) best = i;
    }
    if (best < 0) {
      const buffer = new ArrayBuffer(Math.max(GRAIN, Math.ceil(bytes / GRAIN) * GRAIN));
      this.issued.add(buffer);
      return new Uint8Array(buffer, 0, bytes);
    }
    const [buffer] = this.idle.splice(best, 1) as [ArrayBuffer];
    this.idleTotal -= buffer.byteLength;
    new Uint8Array(buffer, bytes).fill(0);
    return new Uint8Array(buffer, 0, bytes);
  }

  /**
   * Takes back the buffers under `views` that this pool handed out and that are not idle
   * already, while `room` allows. The caller promises nothing still uses them.
   */
  recycle(views: Iterable<ArrayBufferView>): void {
    for (const v of views) {
      const buffer = v.buffer as ArrayBuffer;
      if (!this.issued.has(buffer) || this.idle.includes(buffer)) continue;
      if (!this.room(buffer.byteLength)) continue;
      this.idle.push(buffer);
      this.idleTotal += buffer.byteLength;
    }
  }

  /** Drops idle buffers, oldest first, until at most `maxIdleBytes` are idle. */
  trim(maxIdleBytes: number): void {
    while (this.idleTotal > maxIdleBytes && this.idle.length > 0) {
      this.idleTotal -= this.idle.shift()!.byteLength;
    }
  }
}
