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
 * shortens. So a delay up to the smallest round trip above that round trip
 * counts as none, and a 20 ms link may see 40 ms round trips without
 * shrinking (it shrank to 64-110 in flight, 7 800 msgs/s, where MQTT.js ran
 * at 40 000). Queueing grows with the window; a hold does not. On a link
 * faster than that (loopback, a LAN) the allowance is
 * {@linkcode QUEUE_ALLOWANCE_MS}.
 *
 * A window that filled takes new publishes again only once
 * 1/{@linkcode REFILL_DIVISOR} of it is free ({@linkcode refillLevel}).
 * Behind a Nagle broker every exchange is a lockstep: the broker sends one
 * segment of PUBACKs and holds the next until our write carries the TCP ACK
 * of the first, so we answer each segment with a write, and as many
 * publishes ride each write as PUBACKs rode the segment. Refilled one slot
 * at a time, that stayed at about 7 on loopback: a write and a read per 7
 * messages, most of the client's CPU. Waiting for an eighth of the window
 * makes each batch that large, and the broker answers a large batch with a
 * large segment. With a window of 64 an eighth is about what one segment
 * carries anyway, and a segment with fewer left us waiting for a nudge
 * (0.59x the raw writer), so the batches need the window to grow: a 1 ms
 * allowance kept it at 64. Side by side on loopback (warm processes, 5
 * rounds, against the raw pipelined writer): allowance 1 ms, one slot at a
 * time, 0.83x at 8.2 us CPU per message; 5 ms and an eighth, 1.05x at 3.0
 * us, with ceilings of 256 / 512 / 1 024 in flight giving 0.80-0.83x /
 * 0.91-0.96x / 1.03-1.05x in two sweeps. What keeps the broker busy waits
 * at the broker: the README's table has the queue for each ceiling.
 *
 * A connection starts at {@linkcode INITIAL_WINDOW}, or at
 * {@linkcode START_PER_MS} per ms of its CONNECT round trip if that is more
 * (a 100 ms link: 6 400; loopback: 64): the window a link carrying 64 000
 * msgs/s needs. Until the first round trip longer than the allowance it
 * grows {@linkcode STARTUP_GROWTH}-fold per round trip, at most doubling
 * after that. Doubling from 64 took most of a second to fill a 100 ms link,
 * half the time of a 20 000-message stream. A slower link queues the excess
 * once, and the window shrinks as the ACKs show it: behind a 10 Mbit/s,
 * 20 ms bottleneck (200 messages in flight fill it) it peaks near 4 900,
 * then swings between about 450 and 1 800 at the link's full rate.
 *
 * @module
 */

/** The least window a connection starts with (or maxInflight, if smaller); never shrinks below. */
export const INITIAL_WINDOW = 64;
/** The window a connection starts with per ms of its handshake round trip, if more. */
export const START_PER_MS = 64;
/** The least acknowledgement delay above the smallest seen that counts as queueing, ms. */
export const QUEUE_ALLOWANCE_MS = 5;
/** A window that filled takes more only once this fraction (1/n) of it is free. */
export const REFILL_DIVISOR = 8;
/** How much the window may grow per round trip before the first sign of queueing. */
export const STARTUP_GROWTH = 8;
/**
 * The window never exceeds this many per ms of the smallest round trip, nor
 * {@linkcode FAST_LINK_CEILING} if that is more (see sample()).
 */
export const CEILING_PER_MS = 512;
/** The ceiling on a fast link (loopback, a LAN), below maxInflight. */
export const FAST_LINK_CEILING = 1024;
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

  /**
   * The most publishes in flight at which a window that filled takes new
   * ones again (see the module doc): one slot less for a window under
   * {@linkcode REFILL_DIVISOR} × 2.
   */
  get refillLevel(): number {
    const size = this.size;
    const batch = Math.floor(size / REFILL_DIVISOR);
    return size - (batch > 1 ? batch : 1);
  }

  /** The ceiling now: maxInflight, or the broker's Receive Maximum if lower. */
  get ceiling(): number {
    return this.#cap;
  }

  /** The smallest acknowledgement round trip seen on this connection, ms (Infinity before one). */
  get minRtt(): number {
    return this.#minRtt;
  }

  /**
   * A new connection: it may take another path, so learn its round trip
   * afresh. `handshakeRtt`: CONNECT to CONNACK, ms; it sets the first
   * window (see the module doc).
   */
  reset(now: number, brokerLimit = Infinity, handshakeRtt = 0): void {
    this.#cap = Math.max(1, Math.min(this.#maxInflight, brokerLimit));
    const start = Math.max(INITIAL_WINDOW, Math.floor(handshakeRtt * START_PER_MS));
    this.#window = Math.min(start, this.#cap);
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
    // A fast link needs few in flight: 8 times what a 64 000 msgs/s link's
    // round trip holds, and at least 1 024. Without this, loopback windows
    // swung up to 1 900 (maxInflight 16 384) for no gain in rate and 60 %
    // more memory.
    const linkCeiling = Math.max(FAST_LINK_CEILING, minRtt * CEILING_PER_MS);
    const ceiling = linkCeiling < this.#cap ? linkCeiling : this.#cap;
    this.#window = Math.max(floor, Math.min(ceiling, next));
  }
}
