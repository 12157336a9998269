// Reconnect delays: exponential growth with "equal jitter", so that many
// pages that lost the same gateway do not come back in lockstep.

export type BackoffOptions = {
  baseMs: number;
  maxMs: number;
  /** Returns a number in [0, 1); injectable for tests. */
  random: () => number;
};

export const defaultBackoff: BackoffOptions = { baseMs: 500, maxMs: 15_000, random: Math.random };

/** Delay before reconnect attempt `attempt` (0 for the first retry). */
export function backoffDelay(attempt: number, options: BackoffOptions = defaultBackoff): number {
  const exponential = options.baseMs * 2 ** Math.min(Math.max(attempt, 0), 30);
  const capped = Math.min(options.maxMs, exponential);
  // Half fixed, half random: never less than capped/2, never more than capped.
  return Math.round(capped / 2 + options.random() * (capped / 2));
}
