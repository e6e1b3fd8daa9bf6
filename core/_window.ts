/**
 * The adaptive in-flight window: how many QoS 1/2 publishes may be un-ACKed
 * right now. It grows while acknowledgements come back as fast as the
 * emptiest link allows and shrinks when they start to queue, so a slow link
 * gets a window as large as its round trip needs while a fast one keeps few
 * messages in flight (and so few duplicates after a cut). maxInflight is the
 * ceiling; a broker's Receive Maximum caps it further.
 *
 * Not every late acknowledgement is queueing. A broker running Nagle's
 * algorithm (mosquitto as shipped) holds a PUBACK while its previous packet
 * is un-ACKed, and our TCP ACK of that packet reaches it a round trip after
 * it was sent: a hold of up to one round trip that no smaller window
 * shortens. So a delay up to the smallest round trip (at least
 * {@linkcode QUEUE_ALLOWANCE_MS}) above that round trip counts as none; on
 * loopback that is the 1 ms allowance, as before, and a 20 ms link may see
 * 40 ms round trips without shrinking. Queueing grows with the window; a
 * hold does not.
 *
 * A connection starts at {@linkcode INITIAL_WINDOW} and, until the first
 * round trip longer than that allowance, grows {@linkcode STARTUP_GROWTH}-fold
 * per round trip (at most doubling after that): a 100 ms link needs
 * thousands in flight, and doubling from 64 took most of a second to get
 * there. Ending the start at the first delay, not at the first shrinking,
 * keeps its overshoot small behind a bottleneck (10 Mbit/s, 20 ms: 2 700 in
 * flight at most, rather than 5 700).
 *
 * @module
 */

/** The window a connection starts with (or maxInflight, if smaller). */
export const INITIAL_WINDOW = 64;
/** The least acknowledgement delay above the smallest seen that counts as queueing, ms. */
export const QUEUE_ALLOWANCE_MS = 1;
/** How much the window may grow per round trip before the first sign of queueing. */
export const STARTUP_GROWTH = 8;
/** How long the smallest round trip seen stays the reference, ms. */
const MIN_RTT_EPOCH_MS = 10_000;

/** See the module doc. */
export class AdaptiveWindow {
  readonly #maxInflight: number;
  #cap: number;
  #window: number;
  #minRtt = Infinity;
  #epochMinRtt = Infinity;
  #epochEnd = 0;
  /** No sign of queueing on this connection yet: grow faster. */
  #starting = true;
  /** The last publish filled the window: the sender is waiting on it. */
  limited = false;

  /** A window that never exceeds `maxInflight`. */
  constructor(maxInflight: number) {
    this.#maxInflight = maxInflight;
    this.#cap = maxInflight;
    this.#window = Math.min(INITIAL_WINDOW, maxInflight);
  }

  /** Publishes that may be un-ACKed at the moment (1..ceiling). */
  get size(): number {
    return Math.min(Math.floor(this.#window), this.#cap);
  }

  /** The ceiling now: maxInflight, or the broker's Receive Maximum if lower. */
  get ceiling(): number {
    return this.#cap;
  }

  /** The smallest acknowledgement round trip seen on this connection, ms (Infinity before one). */
  get minRtt(): number {
    return this.#minRtt;
  }

  /** A new connection: it may take another path, so learn its round trip afresh. */
  reset(now: number, brokerLimit = Infinity): void {
    this.#cap = Math.max(1, Math.min(this.#maxInflight, brokerLimit));
    this.#window = Math.min(INITIAL_WINDOW, this.#cap);
    this.#minRtt = Infinity;
    this.#epochMinRtt = Infinity;
    this.#epochEnd = now + MIN_RTT_EPOCH_MS;
    this.#starting = true;
    this.limited = false;
  }

  /**
   * An acknowledgement came `rtt` ms after its publish (never for a re-send:
   * Karn's rule). `occupied`: publishes still in flight after it; the window
   * never shrinks below them (a QoS 2 publish stays in flight after its
   * PUBREC, and in-flight must never exceed the window).
   */
  sample(rtt: number, now: number, occupied = 0): void {
    if (now >= this.#epochEnd) {
      // Forget old minima now and then, so a path that became slower for good
      // is not read as permanent queueing.
      this.#minRtt = this.#epochMinRtt;
      this.#epochMinRtt = Infinity;
      this.#epochEnd = now + MIN_RTT_EPOCH_MS;
    }
    if (rtt < this.#epochMinRtt) this.#epochMinRtt = rtt;
    if (rtt < this.#minRtt) this.#minRtt = rtt;
    // The window that would keep two round trips' worth of the emptiest link in
    // flight at the rate this window achieves: twice the window while ACKs come
    // back as fast as ever, less once they queue (after an allowance for a
    // Nagle hold, see the module doc, or scheduling noise). Each ACK moves the
    // window 1/window of the way, so it changes by at most a factor of two per
    // round trip, without overshoot (STARTUP_GROWTH while starting).
    const minRtt = this.#minRtt;
    const allowance = minRtt > QUEUE_ALLOWANCE_MS ? minRtt : QUEUE_ALLOWANCE_MS;
    const effectiveRtt = Math.max(minRtt, rtt - allowance);
    const window = this.#window;
    // A round trip of 0 (a virtual clock, or a timer that did not tick) is
    // no queueing at all: without this guard 0/0 made the window NaN, and a
    // NaN window never fills.
    const target = effectiveRtt > 0 ? (2 * window * minRtt) / effectiveRtt : 2 * window;
    if (effectiveRtt > minRtt) this.#starting = false;
    if (target >= window && !this.limited) return; // no need to grow
    const step = (target - window) / window;
    const next = window + (step > 0 && this.#starting ? (STARTUP_GROWTH - 1) * step : step);
    const floor = Math.max(Math.min(INITIAL_WINDOW, this.#cap), occupied);
    this.#window = Math.min(this.#cap, Math.max(floor, next));
  }
}
