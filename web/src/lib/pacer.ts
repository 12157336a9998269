// Paces the page's sends below the gateway's per-socket rate limit
// (docs/protocol.md §4: 40 frames at once, 20 a second). A page that held
// many messages while the broker was away sends them when it is back, a few
// at a time, instead of tripping the limit and being closed (1008).

/** Messages sent at once before pacing starts… */
export const SEND_BURST = 20;
/** …then this many a second: half the gateway's rate, leaving room for
 * pings, cancels and read receipts. */
export const SEND_PER_SECOND = 10;

/** A token bucket on the page's clock (milliseconds). */
export class Pacer {
  private tokens: number;
  private at: number | null = null;

  constructor(
    private burst = SEND_BURST,
    private perSecond = SEND_PER_SECOND,
  ) {
    this.tokens = burst;
  }

  /** Takes a token for one send at `now`; false when the page must wait. */
  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** How long from `now` until the next token. */
  wait(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.perSecond);
  }

  private refill(now: number): void {
    if (this.at !== null) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    }
    this.at = now;
  }
}
