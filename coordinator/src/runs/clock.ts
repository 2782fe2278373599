/** Cancels a scheduled callback; calling it twice is harmless. */
export type CancelTimer = () => void;

/**
 * Time as the round engine sees it. Injected so tests advance time explicitly instead of
 * sleeping (Flower's RetryInvoker takes its clock and wait the same way).
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `fn` once, `ms` milliseconds from now. */
  schedule(ms: number, fn: () => void): CancelTimer;
}

/** The real clock. Timers are unref'd so a pending deadline never keeps the process alive. */
export const systemClock: Clock = {
  now: () => Date.now(),
  schedule(ms, fn) {
    // setTimeout caps at 2^31-1 ms (~24.8 days); longer deadlines are re-armed in steps.
    const MAX = 2_147_483_647;
    let handle: NodeJS.Timeout;
    let cancelled = false;
    const arm = (remaining: number): void => {
      handle = setTimeout(
        () => {
          if (cancelled) return;
          if (remaining > MAX) arm(remaining - MAX);
          else fn();
        },
        Math.min(Math.max(0, remaining), MAX),
      );
      handle.unref();
    };
    arm(ms);
    return () => {
      cancelled = true;
      clearTimeout(handle);
    };
  },
};

/** A manual clock for tests: time moves only when {@link advance} is called. */
export class FakeClock implements Clock {
  private timers: { at: number; seq: number; fn: () => void; live: boolean }[] = [];
  private seq = 0;

  constructor(private t = Date.parse('2030-01-01T00:00:00Z')) {}

  now(): number {
    return this.t;
  }

  schedule(ms: number, fn: () => void): CancelTimer {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }

  /** Moves time forward by `ms`, firing due timers in time order (synchronously). */
  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      const due = this.timers
        .filter((x) => x.live && x.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      due.live = false;
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = target;
    this.timers = this.timers.filter((x) => x.live);
  }

  /** Number of live timers (for assertions). */
  pending(): number {
    return this.timers.filter((x) => x.live).length;
  }
}
