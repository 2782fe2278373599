/** Nest injection token for the {@link Clock}; tests inject a fake one to control expiry. */
export const CLOCK = Symbol('CLOCK');

/** Returns "now". Injected so expiry and timestamps are testable without sleeping. */
export type Clock = () => Date;

/** The real wall clock. */
export const systemClock: Clock = () => new Date();
