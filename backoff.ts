/**
 * Reconnect back-off: exponential with jitter, from a short first delay up to
 * a cap, without I/O or timers (the client sleeps).
 *
 * @module
 */

/** Settings of {@linkcode Backoff}. */
export interface BackoffOptions {
  /** Delay before the first retry, in ms. Default 250. */
  initialDelayMs?: number;
  /** The cap, in ms. Default 30 000. */
  maxDelayMs?: number;
  /** Source of randomness in [0, 1); injectable for tests. Default Math.random. */
  random?: () => number;
}

/**
 * Delays for successive reconnect attempts. Each delay is drawn from the upper
 * half of an exponentially growing span ("equal jitter"): clients that lost the
 * same broker spread out instead of returning in lockstep, and no delay is
 * ever shorter than half its span.
 *
 * @example
 * ```ts
 * import { Backoff } from "./backoff.ts";
 * const backoff = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 0.5 });
 * backoff.next(); // 75
 * backoff.next(); // 150
 * backoff.reset(); // after a connection the broker accepted
 * ```
 */
export class Backoff {
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly #random: () => number;
  #attempt = 0;

  /** Creates a back-off; throws RangeError on a non-positive or inverted range. */
  constructor(options: BackoffOptions = {}) {
    this.initialDelayMs = options.initialDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 30_000;
    if (!(this.initialDelayMs > 0) || !(this.maxDelayMs >= this.initialDelayMs)) {
      throw new RangeError(
        `back-off needs 0 < initialDelayMs <= maxDelayMs, got ${this.initialDelayMs} and ${this.maxDelayMs}`,
      );
    }
    this.#random = options.random ?? Math.random;
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.#attempt;
  }

  /** The delay before the next attempt, in ms. */
  next(): number {
    const span = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return span / 2 + this.#random() * span / 2;
  }

  /** The delay after a refusal: the cap, so a refusing broker is not hammered. */
  cap(): number {
    this.#attempt++;
    return this.maxDelayMs;
  }

  /** Start again from the first delay (after a connection the broker accepted). */
  reset(): void {
    this.#attempt = 0;
  }
}
