/**
 * When the client must speak, and when the link is dead: keepalive pings,
 * response deadlines (CONNACK, PINGRESP), and the nudge that lets a Nagle
 * broker's held acknowledgements out.
 *
 * @module
 */

/**
 * The shortest silence after a broker packet, with room in the window, after
 * which the client writes so that its TCP ACK goes out (a broker running
 * Nagle's algorithm holds further acknowledgements until then), ms.
 */
export const ACK_PAUSE_MS = 1;
/** Silences longer than this are left to the TCP stack's delayed ACK (40 ms on Linux), ms. */
export const MAX_ACK_PAUSE_MS = 32;
/**
 * Acknowledgements due, with the sender idle, that make a burst's end (see
 * {@linkcode Liveness.nudgeAt}). Fewer in flight is a producer slower than
 * the round trip, whose next publish carries the ACK.
 */
export const BURST_END_DUE = 64;

/** Keepalive and response timing of one connection at a time. */
export class Liveness {
  /** Keepalive in ms (0: none); a v5 broker may set its own (Server Keep Alive). */
  keepaliveMs: number;
  readonly #responseTimeMs: number;
  /** The link is up (CONNACK accepted): keepalive and nudges apply. */
  up = false;
  connackDeadline = Infinity;
  lastSentAt = 0;
  lastReceivedAt = 0;
  /** When the first unanswered PINGREQ went out; Infinity when none is. */
  pingSentAt = Infinity;
  /** CONNECT to CONNACK on the current connection, ms (0 before one). */
  handshakeRtt = 0;
  #connectSentAt = 0;
  // A broker running Nagle's algorithm (mosquitto's default) holds small
  // packets while an earlier one is un-ACKed, and Linux delays our TCP ACK up
  // to 40 ms unless a write of ours carries it. So when the broker falls
  // silent after a packet while acknowledgements are due, the client writes.
  #heardSinceWrite = false;
  #pingsSinceAck = 0;

  /** Timing for a keepalive (0: none) and a response time, both ms. */
  constructor(keepaliveMs: number, responseTimeMs: number) {
    this.keepaliveMs = keepaliveMs;
    this.#responseTimeMs = responseTimeMs;
  }

  /** The response time, ms. */
  get responseTimeMs(): number {
    return this.#responseTimeMs;
  }

  /** CONNECT was written at `now`. */
  connecting(now: number): void {
    this.up = false;
    this.connackDeadline = now + this.#responseTimeMs;
    this.#connectSentAt = now;
    this.pingSentAt = Infinity;
    this.#pingsSinceAck = 0;
    this.lastReceivedAt = now;
    this.wrote(now);
  }

  /** CONNACK accepted at `now`. */
  connected(now: number): void {
    this.up = true;
    this.connackDeadline = Infinity;
    this.handshakeRtt = now - this.#connectSentAt;
    this.heard(now);
  }

  /** The connection ended. */
  down(): void {
    this.up = false;
    this.connackDeadline = Infinity;
    this.pingSentAt = Infinity;
  }

  /** Something was written at `now`. */
  wrote(now: number): void {
    this.lastSentAt = now;
    this.#heardSinceWrite = false;
  }

  /** Something was received at `now` (every packet proves the link alive). */
  heard(now: number): void {
    this.lastReceivedAt = now;
    this.#heardSinceWrite = true;
  }

  /** An acknowledgement of a publish arrived: nudges start over. */
  acked(): void {
    this.#pingsSinceAck = 0;
  }

  /** A PINGREQ was written at `now` (the first unanswered one is the one timed). */
  pinged(now: number): void {
    if (this.pingSentAt === Infinity) this.pingSentAt = now;
    this.#pingsSinceAck++;
    this.wrote(now);
  }

  /** A PINGRESP arrived at `now`. */
  pingAnswered(now: number): void {
    this.pingSentAt = Infinity;
    this.heard(now);
  }

  /**
   * When keepalive calls for a PINGREQ: nothing sent, or nothing received,
   * for a keepalive interval (the second half finds a half-open link under a
   * client that only sends QoS 0). Infinity when keepalive is off.
   */
  keepaliveAt(): number {
    if (!this.up || this.keepaliveMs === 0) return Infinity;
    // The client must speak at least once per keepalive whatever it waits for
    // (MQTT-3.1.2-23): with a PINGREQ out, silence on the broker's side is the
    // ping deadline's business, so only our own silence counts.
    if (this.pingSentAt !== Infinity) return this.lastSentAt + this.keepaliveMs;
    const quiet = this.lastSentAt < this.lastReceivedAt ? this.lastSentAt : this.lastReceivedAt;
    return quiet + this.keepaliveMs;
  }

  /**
   * When silence after the broker's last packet calls for a write; Infinity
   * unless the link is up, acknowledgements are due (`outstanding` > 0) and
   * we have not written since that packet. With the window full and no
   * PINGREQ out it is due at once (the owner looks once the packet's read is
   * handled); otherwise the silence must last two round trips and at least
   * {@linkcode ACK_PAUSE_MS}. Each PINGREQ without an acknowledgement since
   * doubles it (a slow broker is not pinged in a loop); past
   * {@linkcode MAX_ACK_PAUSE_MS} the broker's wait for our delayed ACK is no
   * longer than ours would be, so there is no nudge.
   *
   * A burst's end is the exception: with the sender idle (`senderIdle`), at
   * least {@linkcode BURST_END_DUE} acknowledgements due and acknowledgements
   * since the last PINGREQ, it is due once we have been silent for half the
   * smallest round trip (at least {@linkcode ACK_PAUSE_MS}). No publish will
   * carry our ACK then, and a 2 000-message replay at 20 ms waited 43 ms for
   * its last 606 PUBACKs until the delayed ACK let them out. A producer that
   * writes more often than that is never silent that long.
   */
  nudgeAt(
    outstanding: number,
    windowFull: boolean,
    minRtt: number,
    senderIdle = false,
  ): number {
    if (!this.up || outstanding === 0 || !this.#heardSinceWrite) return Infinity;
    const roundTrips = minRtt === Infinity ? 0 : 2 * minRtt;
    const patient = roundTrips > ACK_PAUSE_MS ? roundTrips : ACK_PAUSE_MS;
    const first = windowFull && this.pingSentAt === Infinity ? 0 : patient;
    const pings = this.#pingsSinceAck;
    const pause = pings === 0 ? first : patient * 2 ** pings;
    const at = pause > MAX_ACK_PAUSE_MS ? Infinity : this.lastReceivedAt + pause;
    if (!senderIdle || outstanding < BURST_END_DUE || pings > 0) return at;
    const halfRtt = roundTrips / 4;
    const quiet = halfRtt > ACK_PAUSE_MS ? halfRtt : ACK_PAUSE_MS;
    const silent = this.lastSentAt + quiet;
    const burstEnd = silent > this.lastReceivedAt ? silent : this.lastReceivedAt;
    return burstEnd < at ? burstEnd : at;
  }
}
