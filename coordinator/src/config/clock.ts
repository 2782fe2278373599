/** Nest injection token for the platform {@link Clock}; tests inject a fake one to control expiry. */
export const CLOCK = Symbol('CLOCK');

/**
 * "Now", injected so expiry and timestamps are testable without sleeping. Structurally a
 * subset of the round engine's clock (runs/clock.ts), so its FakeClock fits here too.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

/** The real wall clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** ISO-8601 timestamp of the clock's now. */
export function isoNow(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}
