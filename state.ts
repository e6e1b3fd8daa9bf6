/**
 * The protocol decisions of one MQTT session, without I/O: which packet id is
 * free, which QoS 1 publishes are in flight and in what order, what to re-send
 * on a fresh connection, whether the in-flight window has room, when a ping is
 * due and when the link must be declared dead.
 *
 * Every method takes the current time as an argument (milliseconds, any
 * monotonic origin) and returns what to do; the caller performs the I/O. That
 * keeps every edge case a plain unit test.
 *
 * @module
 */

/** A QoS 1 PUBLISH that the broker has not acknowledged yet. */
export interface InflightPublish {
  /** Packet id, kept across re-sends. */
  readonly id: number;
  /** Topic name. */
  readonly topic: string;
  /** Payload bytes. */
  readonly payload: Uint8Array;
  /** Retain flag. */
  readonly retain: boolean;
  /** When it was last written, on the current or an earlier connection. */
  sentAt: number;
  /** Whether it was written before on an earlier connection (DUP flag). */
  dup: boolean;
  /** Called by the client when the PUBACK arrives or the publish is abandoned. */
  settle?: (error?: Error) => void;
}

/** A SUBSCRIBE or UNSUBSCRIBE waiting for its SUBACK or UNSUBACK. */
export interface PendingRequest {
  /** Packet id, kept across re-sends. */
  readonly id: number;
  /** Which request. */
  readonly kind: "subscribe" | "unsubscribe";
  /** The topic filters it carries. */
  readonly filters: readonly string[];
  /** Requested QoS (subscribe only). */
  readonly qos: 0 | 1;
  /** When it was last written. */
  sentAt: number;
  /** Called by the client with the broker's return codes, or an error. */
  settle?: (result: number[] | Error) => void;
}

/** What to write on a fresh connection before anything new, in this order. */
export interface ResendPlan {
  /** Un-ACKed publishes in original order, now flagged DUP. */
  readonly publishes: InflightPublish[];
  /** Unanswered subscribe/unsubscribe requests in original order. */
  readonly requests: PendingRequest[];
}

/** Timing and window settings of {@linkcode MqttState}. */
export interface StateOptions {
  /** Keepalive interval in ms; 0 disables pings. */
  keepaliveMs: number;
  /** How long the broker gets to answer CONNECT, PINGREQ, PUBLISH, SUBSCRIBE, UNSUBSCRIBE. */
  responseTimeMs: number;
  /** How many QoS 1 publishes may be un-ACKed at once. */
  maxInflight: number;
}

/** Packet ids are 16-bit and never 0. */
export const MAX_PACKET_ID = 65_535;

/** The window a connection starts with (or maxInflight, if smaller). */
export const INITIAL_WINDOW = 64;
/** Acknowledgement delay above the smallest seen that counts as queueing, ms. */
const QUEUE_ALLOWANCE_MS = 1;
/** How long the smallest round trip seen stays the reference, ms. */
const MIN_RTT_EPOCH_MS = 10_000;
/**
 * The shortest silence after a broker packet, with room in the window, after
 * which the client writes so that its TCP ACK goes out (a broker running
 * Nagle's algorithm holds further PUBACKs until then), ms.
 */
export const ACK_PAUSE_MS = 1;
/** Silences longer than this are left to the TCP stack's delayed ACK (40 ms on Linux), ms. */
export const MAX_ACK_PAUSE_MS = 32;

/**
 * Session state of one client, driven by the client's I/O code.
 *
 * @example
 * ```ts
 * import { MqttState } from "./state.ts";
 * const state = new MqttState({ keepaliveMs: 60_000, responseTimeMs: 10_000, maxInflight: 2 });
 * state.connectStarted(0);
 * state.sessionStarted(5);
 * const id = state.nextPacketId();
 * state.publishSent({ id, topic: "t", payload: new Uint8Array(), retain: false, sentAt: 5, dup: false }, 5);
 * state.deadLinkReason(10_006); // "no PUBACK for packet 1 within 10000 ms"
 * ```
 */
export class MqttState {
  readonly #keepaliveMs: number;
  readonly #responseTimeMs: number;
  readonly #maxInflight: number;

  // The adaptive window: how many publishes may be un-ACKed right now. It
  // grows while PUBACKs come back as fast as the emptiest link allows and
  // shrinks when they start to queue, so a slow link gets a window as large
  // as its round trip needs while a fast one keeps few messages in flight
  // (and so few duplicates after a cut). maxInflight is the ceiling.
  #window: number;
  #minRtt = Infinity;
  #epochMinRtt = Infinity;
  #epochEnd = 0;
  #windowLimited = false; // the last publish filled the window: the sender is waiting on it
  // A broker running Nagle's algorithm (mosquitto's default) holds small
  // packets while an earlier one is un-ACKed, and Linux delays our TCP ACK up
  // to 40 ms unless a write of ours carries it. So when the broker falls
  // silent after a packet while PUBACKs are due, the client writes something.
  #heardSinceWrite = false; // the broker sent something we have not written after
  #pingsSinceAck = 0; // PINGREQs written since the last PUBACK

  /** Un-ACKed QoS 1 publishes; Map iteration order is send order. */
  readonly inflight: Map<number, InflightPublish> = new Map();
  /** Unanswered SUBSCRIBE/UNSUBSCRIBE requests, in send order. */
  readonly requests: Map<number, PendingRequest> = new Map();

  #lastId = 0;
  #linkUp = false;
  #connackDeadline: number | undefined;
  #lastSentAt = 0;
  #lastReceivedAt = 0;
  #pingSentAt: number | undefined;

  /** Creates empty state; throws RangeError on nonsensical settings. */
  constructor(options: StateOptions) {
    if (!(options.maxInflight >= 1 && options.maxInflight <= MAX_PACKET_ID)) {
      throw new RangeError(`maxInflight must be 1..${MAX_PACKET_ID}, got ${options.maxInflight}`);
    }
    this.#keepaliveMs = options.keepaliveMs;
    this.#responseTimeMs = options.responseTimeMs;
    this.#maxInflight = options.maxInflight;
    this.#window = Math.min(INITIAL_WINDOW, options.maxInflight);
  }

  /** How many QoS 1 publishes may be un-ACKed at the moment (1..maxInflight). */
  get window(): number {
    return Math.floor(this.#window);
  }

  /** Whether a session is established on a live connection. */
  get linkUp(): boolean {
    return this.#linkUp;
  }

  // ---- connection lifecycle -------------------------------------------------

  /** CONNECT was written at `now`; the CONNACK is due within responseTime. */
  connectStarted(now: number): void {
    this.#linkUp = false;
    this.#connackDeadline = now + this.#responseTimeMs;
    this.#pingSentAt = undefined;
    this.#wrote(now);
    this.#lastReceivedAt = now;
    this.#pingsSinceAck = 0;
    // A new connection may take another path: learn its round trip afresh.
    this.#window = Math.min(INITIAL_WINDOW, this.#maxInflight);
    this.#minRtt = Infinity;
    this.#epochMinRtt = Infinity;
    this.#epochEnd = now + MIN_RTT_EPOCH_MS;
  }

  /**
   * CONNACK 0 arrived at `now`: the link is up. Returns everything that must
   * be re-sent before any new packet. Whether the broker kept the session
   * does not matter: un-ACKed publishes are re-sent either way (a new session
   * simply takes them as new deliveries, so at-least-once holds).
   */
  sessionStarted(now: number): ResendPlan {
    this.#linkUp = true;
    this.#connackDeadline = undefined;
    this.#lastReceivedAt = now;
    const publishes = [...this.inflight.values()];
    for (const publish of publishes) {
      publish.dup = true;
      publish.sentAt = now;
    }
    const requests = [...this.requests.values()];
    for (const request of requests) request.sentAt = now;
    if (publishes.length > 0 || requests.length > 0) this.#wrote(now);
    return { publishes, requests };
  }

  /** The connection ended (or the attempt failed). Nothing outstanding is forgotten. */
  linkLost(): void {
    this.#linkUp = false;
    this.#connackDeadline = undefined;
    this.#pingSentAt = undefined;
  }

  // ---- packet ids and the window ------------------------------------------

  /** Whether a new QoS 1 publish may be written now. */
  hasWindowRoom(): boolean {
    return this.inflight.size < this.#window && this.#idsInUse() < MAX_PACKET_ID;
  }

  /** Whether a packet id is free for a subscribe/unsubscribe. */
  hasFreeId(): boolean {
    return this.#idsInUse() < MAX_PACKET_ID;
  }

  #idsInUse(): number {
    return this.inflight.size + this.requests.size;
  }

  /**
   * The next packet id not in use, cycling through 1..65535. Throws a
   * RangeError when all are in use (check {@linkcode hasFreeId} first).
   */
  nextPacketId(): number {
    if (!this.hasFreeId()) throw new RangeError("all 65535 packet ids are in use");
    let id = this.#lastId;
    do {
      id = id === MAX_PACKET_ID ? 1 : id + 1;
    } while (this.inflight.has(id) || this.requests.has(id));
    this.#lastId = id;
    return id;
  }

  // ---- traffic ---------------------------------------------------------------

  /** A QoS 1 PUBLISH was written at `now`; it stays in flight until its PUBACK. */
  publishSent(publish: InflightPublish, now: number): void {
    publish.sentAt = now;
    this.inflight.set(publish.id, publish);
    this.#wrote(now);
    this.#windowLimited = this.inflight.size >= this.#window;
  }

  /** A PUBACK arrived. Returns the acknowledged publish, or undefined for an unknown id. */
  pubackReceived(id: number, now: number): InflightPublish | undefined {
    this.#heard(now);
    this.#pingsSinceAck = 0;
    const publish = this.inflight.get(id);
    if (!publish) return undefined;
    // A re-sent publish's PUBACK may answer either send: no round-trip sample.
    if (!publish.dup) this.#adaptWindow(now - publish.sentAt, now);
    this.inflight.delete(id);
    return publish;
  }

  /**
   * Whether a PINGREQ should go out now to carry our TCP ACK: the broker sent
   * a packet and then fell silent while PUBACKs are due, and nothing of ours
   * was written since (see {@linkcode ACK_PAUSE_MS}). Publishes that could
   * have carried it went out when that packet freed their room. The client
   * asks right after each packet's read is handled (a full window needs no
   * wait) and from its timer ({@linkcode nextDeadline} includes the moment).
   */
  ackNudgeDue(now: number): boolean {
    return now >= this.#ackPauseEndsAt();
  }

  /**
   * When the client's timer must look at {@linkcode ackNudgeDue}; Infinity
   * when no nudge is pending. An immediate one the client checks itself,
   * right after the packet: for it the timer is only a backstop.
   */
  ackNudgeTimerAt(): number {
    return Math.max(this.#ackPauseEndsAt(), this.#lastReceivedAt + ACK_PAUSE_MS);
  }

  /**
   * When silence after the broker's last packet calls for a write; Infinity
   * unless the link is up, PUBACKs are due and we have not written since that
   * packet. Any packet counts: a PINGRESP may be what got through ahead of
   * held PUBACKs. With the window full and no PINGREQ out it is due at once
   * (the client looks once the packet's read is handled); otherwise the
   * silence must last two round trips and at least {@linkcode ACK_PAUSE_MS}
   * (in practice Deno's timers make that several ms). Each PINGREQ without a
   * PUBACK since doubles it (a slow broker is not pinged in a loop); past
   * {@linkcode MAX_ACK_PAUSE_MS} the broker's wait for our delayed ACK is no
   * longer than ours would be, so there is no nudge (nor on links whose
   * round trip exceeds 16 ms).
   */
  #ackPauseEndsAt(): number {
    if (!this.#linkUp || this.inflight.size === 0 || !this.#heardSinceWrite) return Infinity;
    // With room, a plain round trip must not look like a hold (before the
    // first sample, the shortest pause stands in).
    const roundTrips = Number.isFinite(this.#minRtt) ? 2 * this.#minRtt : 0;
    const patient = Math.max(ACK_PAUSE_MS, roundTrips);
    // A full window cannot have a publish carry the ACK, and only PUBACKs can
    // free it: no reason to wait, unless a PINGREQ is already out.
    const windowFull = this.inflight.size >= this.#window;
    const first = windowFull && this.#pingSentAt === undefined ? 0 : patient;
    const pings = this.#pingsSinceAck;
    const pause = pings === 0 ? first : patient * 2 ** pings;
    return pause > MAX_ACK_PAUSE_MS ? Infinity : this.#lastReceivedAt + pause;
  }

  #adaptWindow(rtt: number, now: number): void {
    if (now >= this.#epochEnd) {
      // Forget old minima now and then, so a path that became slower for good
      // is not read as permanent queueing.
      this.#minRtt = this.#epochMinRtt;
      this.#epochMinRtt = Infinity;
      this.#epochEnd = now + MIN_RTT_EPOCH_MS;
    }
    this.#epochMinRtt = Math.min(this.#epochMinRtt, rtt);
    this.#minRtt = Math.min(this.#minRtt, rtt);
    // The window that would keep two round trips' worth of the emptiest link in
    // flight at the rate this window achieves: twice the window while PUBACKs
    // come back as fast as ever, less once they queue (after a small allowance
    // for scheduling noise). Each ACK moves the window 1/window of the way, so
    // it changes by at most a factor of two per round trip, without overshoot.
    const effectiveRtt = Math.max(this.#minRtt, rtt - QUEUE_ALLOWANCE_MS);
    const target = (2 * this.#window * this.#minRtt) / effectiveRtt;
    if (target > this.#window && !this.#windowLimited) return; // no need to grow
    const floor = Math.min(INITIAL_WINDOW, this.#maxInflight);
    const next = this.#window + (target - this.#window) / this.#window;
    this.#window = Math.min(this.#maxInflight, Math.max(floor, next));
  }

  /** A SUBSCRIBE or UNSUBSCRIBE was written at `now`. */
  requestSent(request: PendingRequest, now: number): void {
    request.sentAt = now;
    this.requests.set(request.id, request);
    this.#wrote(now);
  }

  /**
   * A SUBACK or UNSUBACK arrived. Returns the matching request, or undefined
   * when no request of that kind has this id (a protocol violation).
   */
  responseReceived(
    id: number,
    kind: PendingRequest["kind"],
    now: number,
  ): PendingRequest | undefined {
    this.#heard(now);
    const request = this.requests.get(id);
    if (!request || request.kind !== kind) return undefined;
    this.requests.delete(id);
    return request;
  }

  /** Any packet other than a QoS 1 PUBLISH was written at `now`. */
  packetSent(now: number): void {
    this.#wrote(now);
  }

  /** Any packet was received at `now` (all of them prove the link is alive). */
  packetReceived(now: number): void {
    this.#heard(now);
  }

  /** A PINGRESP arrived. */
  pingrespReceived(now: number): void {
    this.#heard(now);
    this.#pingSentAt = undefined;
  }

  #wrote(now: number): void {
    this.#lastSentAt = now;
    this.#heardSinceWrite = false;
  }

  #heard(now: number): void {
    this.#lastReceivedAt = now;
    this.#heardSinceWrite = true;
  }

  // ---- keepalive and dead-link detection ----------------------------------

  /**
   * Whether a PINGREQ should go out now: keepalive is on, none is outstanding,
   * and nothing was sent, or nothing received, for a keepalive interval. The
   * second half matters for a client that only sends QoS 0: without it a
   * half-open link would never be noticed.
   */
  pingDue(now: number): boolean {
    if (!this.#linkUp || this.#keepaliveMs === 0 || this.#pingSentAt !== undefined) return false;
    return now - Math.min(this.#lastSentAt, this.#lastReceivedAt) >= this.#keepaliveMs;
  }

  /** A PINGREQ was written at `now` (the first unanswered one is the one timed). */
  pingSent(now: number): void {
    this.#pingSentAt ??= now;
    this.#pingsSinceAck++;
    this.#wrote(now);
  }

  /**
   * Why the link must be considered dead at `now`, or undefined while it is
   * healthy: an expected CONNACK, PINGRESP, PUBACK, SUBACK or UNSUBACK is
   * overdue by more than responseTime.
   */
  deadLinkReason(now: number): string | undefined {
    const limit = this.#responseTimeMs;
    if (this.#connackDeadline !== undefined && now >= this.#connackDeadline) {
      return `no CONNACK within ${limit} ms`;
    }
    if (!this.#linkUp) return undefined;
    if (this.#pingSentAt !== undefined && now - this.#pingSentAt >= limit) {
      return `no PINGRESP within ${limit} ms`;
    }
    const publish = first(this.inflight);
    if (publish && now - publish.sentAt >= limit) {
      return `no PUBACK for packet ${publish.id} within ${limit} ms`;
    }
    const request = first(this.requests);
    if (request && now - request.sentAt >= limit) {
      const answer = request.kind === "subscribe" ? "SUBACK" : "UNSUBACK";
      return `no ${answer} for packet ${request.id} within ${limit} ms`;
    }
    return undefined;
  }

  /**
   * The earliest time at which {@linkcode pingDue},
   * {@linkcode deadLinkReason} or {@linkcode ackNudgeDue} may change its
   * answer; Infinity when nothing is pending. The client sets one timer for it.
   */
  nextDeadline(): number {
    let at = Infinity;
    if (this.#connackDeadline !== undefined) at = this.#connackDeadline;
    if (!this.#linkUp) return at;
    const limit = this.#responseTimeMs;
    if (this.#pingSentAt !== undefined) {
      at = Math.min(at, this.#pingSentAt + limit);
    } else if (this.#keepaliveMs > 0) {
      at = Math.min(at, Math.min(this.#lastSentAt, this.#lastReceivedAt) + this.#keepaliveMs);
    }
    const publish = first(this.inflight);
    if (publish) at = Math.min(at, publish.sentAt + limit);
    const request = first(this.requests);
    if (request) at = Math.min(at, request.sentAt + limit);
    at = Math.min(at, this.ackNudgeTimerAt());
    return at;
  }

  // ---- the end -------------------------------------------------------------

  /**
   * Removes and returns everything outstanding (the client is shutting down
   * and must settle each with an error).
   */
  takeAll(): { publishes: InflightPublish[]; requests: PendingRequest[] } {
    const publishes = [...this.inflight.values()];
    const requests = [...this.requests.values()];
    this.inflight.clear();
    this.requests.clear();
    return { publishes, requests };
  }
}

function first<V>(map: Map<number, V>): V | undefined {
  for (const value of map.values()) return value;
  return undefined;
}
