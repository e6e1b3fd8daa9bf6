/**
 * The simulator's invariants, checked while a schedule runs and at its end.
 * It watches the wire on the client's side of every connection (what the
 * client wrote, what reached it), the engine after every event, the
 * supervisor's dials and back-off sleeps, the broker's accepted messages and
 * the application's deliveries.
 *
 * @module
 */

import { PacketDecoder } from "../codec/decode.ts";
import type { Packet, ProtocolVersion, PublishPacket } from "../codec/packets.ts";
import type { Engine } from "../client/_engine.ts";
import type { SimConnection } from "./network.ts";

/** One broken invariant. */
export interface Violation {
  /** Virtual time. */
  at: number;
  /** Which invariant. */
  rule: string;
  /** What happened. */
  detail: string;
}

/** Settings the checks need. */
export interface CheckerConfig {
  keepaliveMs: number;
  responseTimeMs: number;
  maxInflight: number;
  protocolVersion: ProtocolVersion;
  initialDelayMs: number;
  maxDelayMs: number;
  /** The broker's Receive Maximum (v5 caps the window by it). */
  brokerReceiveMaximum: number;
  /** Brokers in the client's `servers` list. */
  servers: number;
  /** Failed attempts on one server before the client moves on. */
  bounceAfter: number;
}

/** What the checker knows of one message the workload published. */
export interface PublishRecord {
  tag: string;
  qos: 0 | 1 | 2;
  sync: boolean;
  /** "pending" until the call settles. */
  outcome: "pending" | "resolved" | "rejected";
  /** Withdrawn before being written (aborted while queued) or refused: it need not arrive. */
  excused: boolean;
  /** How often the broker accepted it for routing. */
  accepted: number;
  /** Connection and packet id of its last write, and whether an ack for it reached the client. */
  acked: boolean;
  /** QoS 2: PUBREC reached the client (the PUBLISH must never be written again, MQTT-4.3.3). */
  received: boolean;
}

interface ConnState {
  conn: SimConnection;
  writes: PacketDecoder;
  reads: PacketDecoder;
  /** Messages written on this connection, by tag. */
  sent: Set<string>;
  /** Packet id -> tag of publishes written here. */
  ids: Map<number, string>;
  /** A message new to this connection was written: re-sends must come before it. */
  freshSeen: boolean;
  /** Tags re-sent here, in order. */
  resent: string[];
  /** CONNACK reached the client: when, and whether the broker had the session. */
  connackAt: number | undefined;
  /** Any CONNACK (accepting or refusing) reached the client. */
  connackRead: boolean;
  sessionPresent: boolean;
  /** The last time the client wrote on it. */
  lastWrite: number;
  /** Set by a blackhole: the client must close it within keepalive + responseTime. */
  deadSince: number | undefined;
}

const decoderFor = (version: ProtocolVersion) => new PacketDecoder({ protocolVersion: version });

/** See the module doc. */
export class Checker {
  readonly violations: Violation[] = [];
  readonly publishes = new Map<string, PublishRecord>();
  /** Incoming messages the application received, by tag: how often. */
  readonly delivered = new Map<string, number>();
  /** Incoming messages the broker routed to the client, by tag (minus those a broker restart lost). */
  readonly routedIn = new Map<string, 0 | 1 | 2>();
  /** QoS 1/2 publishes that must still reach the broker (kept as a set: checked after every event). */
  readonly waiting = new Set<PublishRecord>();
  /** QoS 1/2 messages routed to the client and not delivered to the application yet. */
  readonly undelivered = new Set<string>();
  /** Tags the broker may legitimately deliver twice (a session was lost in between). */
  readonly excusedDuplicates = new Set<string>();
  readonly #conns = new Map<number, ConnState>();
  /** Messages ever written, in first-write order (their position). */
  readonly #firstOrder = new Map<string, number>();
  /** The last packet id each message was written with. */
  readonly #lastId = new Map<string, number>();
  #sessionLost = false; // a CONNACK said the broker had no session, since the message was sent
  #connectedSinceSleep = false;
  /** QoS 2 exchanges open at the broker (PUBLISH written, no PUBCOMP read): packet id -> tag. */
  readonly #qos2Open = new Map<number, string>();
  /**
   * QoS 2 ids the broker holds that the client forgot (a process killed without a store,
   * or a session on another broker in between), with the message each holds: a new
   * message with one of them is swallowed.
   */
  #orphans = new Map<number, string>();
  /** The broker of the last accepted CONNACK. */
  #on: string | undefined;
  /** What each broker the client left still holds: its open QoS 2 ids. */
  readonly #heldAt = new Map<string, Map<number, string>>();
  /** The broker each incoming message was routed at. */
  readonly #routedAt = new Map<string, string>();
  /** The broker of the last accepted CONNACK, while the link it made is up: the next dial's. */
  #stickTo: string | undefined;
  /** The host of the last dial, and failed attempts on it in a row (-Infinity: not counted). */
  #dialHost: string | undefined;
  #failedHere = 0;
  #dialedSinceSleep = false;
  #connackSinceSleep = false;
  counts = { faults: 0, connections: 0, resends: 0 };
  /** The last time a message reached the broker or the application. */
  lastProgress = 0;
  /** Set while the client process is being stopped: a closed handshake is then expected. */
  stopping = false;
  /** Set when the run met a documented limit that stops it for good: the end checks are off. */
  knownLimit: string | undefined;

  /** A new client process started and has not connected yet. */
  #newProcess = false;

  /** A new client process starts (after a crash or a graceful restart). */
  processStarted(): void {
    this.#newProcess = true;
  }

  /** A connection closed before any CONNACK arrived on it (the broker may have made a session). */
  #connectUnanswered = false;
  /** The broker restarted without persistence since the last accepted CONNACK. */
  #forgotSinceConnack = false;
  /** Incoming QoS 2 packet ids and the message each last carried. */
  readonly #incomingQos2 = new Map<number, string>();
  /** Incoming QoS 2 messages the client answered with PUBREC (its id record was durable). */
  readonly #pubrecWritten = new Set<string>();
  /** Counts attempts that ended, to tell whether the supervisor moved on since. */
  #attemptsEnded = 0;

  /** Told of every packet the client wrote (`out`) or read, for the trace. */
  onPacket: ((connection: number, out: boolean, packet: Packet) => void) | undefined;

  constructor(
    readonly config: CheckerConfig,
    readonly now: () => number,
    /** Runs `check` once everything at this instant has happened. */
    readonly later: (check: () => void) => void = () => {},
  ) {}

  /** The broker broke the protocol on `s`: the client must close that connection at once. */
  #expectClose(s: ConnState, what: string): void {
    this.later(() => {
      if (!s.conn.clientClosed && s.conn.alive) {
        this.fail(
          "a protocol violation closes the connection at once (MQTT-4.8.0-1)",
          `connection ${s.conn.id} still open after ${what}`,
        );
      }
    });
  }

  fail(rule: string, detail: string): void {
    if (this.violations.length < 50) this.violations.push({ at: this.now(), rule, detail });
  }

  // ---- the wire ----------------------------------------------------------------------

  /** Watches a new connection. */
  attach(conn: SimConnection): void {
    this.counts.connections++;
    const state: ConnState = {
      conn,
      writes: decoderFor(this.config.protocolVersion),
      reads: decoderFor(this.config.protocolVersion),
      sent: new Set(),
      ids: new Map(),
      freshSeen: false,
      resent: [],
      connackAt: undefined,
      connackRead: false,
      sessionPresent: false,
      lastWrite: this.now(),
      deadSince: undefined,
    };
    this.#conns.set(conn.id, state);
    conn.taps.clientWrite = (_c, bytes) => this.#decode(state, state.writes, bytes, true);
    conn.taps.clientRead = (_c, bytes) => this.#decode(state, state.reads, bytes, false);
    conn.taps.clientClose = () => {
      if (state.connackAt === undefined && !state.connackRead) this.#connectUnanswered = true;
      if (state.connackAt !== undefined || this.stopping) return;
      // The attempt failed: the supervisor must move on now (back off, or give up).
      const attempt = ++this.#attemptsEnded;
      this.later(() =>
        this.later(() => {
          if (attempt === this.#attemptsEnded && !this.stopping) {
            this.fail(
              "a connection closed during its handshake ends the attempt at once",
              `connection ${conn.id}: no back-off and no new dial after it closed`,
            );
          }
        })
      );
    };
    this.#attemptsEnded++; // a new dial: the previous attempt moved on
  }

  #decode(state: ConnState, decoder: PacketDecoder, bytes: Uint8Array, written: boolean): void {
    try {
      decoder.push(bytes, (p) => {
        this.onPacket?.(state.conn.id, written, p);
        if (written) this.#written(state, p);
        else this.#read(state, p);
      });
    } catch (error) {
      // The broker may send garbage on purpose; what the client writes must always decode.
      if (written) this.fail("client writes valid MQTT", String(error));
      else this.#expectClose(state, `malformed bytes (${error})`);
      decoder.protocolVersion = this.config.protocolVersion;
    }
  }

  #written(s: ConnState, packet: Packet): void {
    const now = this.now();
    const keepalive = this.config.keepaliveMs;
    // While earlier bytes still go out the client is not silent, only slowed down.
    const since = Math.max(s.lastWrite, Math.min(now, s.conn.toBroker.txFreeAt));
    if (s.connackAt !== undefined && keepalive > 0 && now - since > keepalive + 1e-6) {
      this.fail(
        "silent no longer than keepalive",
        `connection ${s.conn.id}: no write for ${
          (now - since).toFixed(1)
        } ms (keepalive ${keepalive} ms)`,
      );
    }
    s.lastWrite = now;
    if (packet.cmd === "pubrec") {
      const tag = this.#incomingQos2.get(packet.messageId!);
      if (tag !== undefined) this.#pubrecWritten.add(tag);
      return;
    }
    if (packet.cmd !== "publish" || packet.qos === 0) return;
    const tag = tagOf(packet);
    if (tag === undefined) return;
    const record = this.publishes.get(tag);
    const id = packet.messageId!;
    if (packet.qos === 2) {
      const held = this.#orphans.get(id);
      if (this.#orphans.delete(id) && held !== tag && record !== undefined) {
        // The broker still holds this id from a process that died without a store (or from
        // before a session on the other broker): it takes this PUBLISH for a re-send of
        // that one (documented in the README).
        this.excuse(record);
      }
      this.#qos2Open.set(id, tag);
    }
    s.ids.set(id, tag);
    if (s.sent.has(tag)) {
      this.fail(
        "nothing re-sent on a live connection",
        `${tag} written twice on connection ${s.conn.id}`,
      );
      return;
    }
    s.sent.add(tag);
    const firstAt = this.#firstOrder.get(tag);
    if (firstAt === undefined) {
      this.#firstOrder.set(tag, this.#firstOrder.size);
      this.#lastId.set(tag, id);
      // DUP on a first write is allowed: the client may have handed it to a socket that
      // died before the bytes left.
      if (!packet.dup) s.freshSeen = true;
      return;
    }
    // A re-send on a fresh connection.
    this.counts.resends++;
    if (!packet.dup) this.fail("re-sends carry DUP", `${tag} re-sent without DUP`);
    if (this.#lastId.get(tag) !== id) {
      this.fail("re-sends keep their id", `${tag} re-sent as ${id}, was ${this.#lastId.get(tag)}`);
    }
    if (s.freshSeen) {
      this.fail("re-sends before anything new", `${tag} re-sent after a new message`);
    }
    const previous = s.resent.at(-1);
    if (previous !== undefined && this.#firstOrder.get(previous)! > firstAt) {
      this.fail("re-sends in original order", `${tag} re-sent after ${previous}`);
    }
    s.resent.push(tag);
    if (record?.acked) {
      this.fail(
        "a PUBACKed message is never re-sent",
        `${tag} re-sent after its PUBACK reached the client`,
      );
    }
    if (record?.received && s.sessionPresent) {
      this.fail("no PUBLISH after PUBREC (MQTT-4.3.3)", `${tag} re-sent after its PUBREC`);
    }
  }

  #read(s: ConnState, packet: Packet): void {
    if (packet.cmd === "disconnect" && packet.reasonCode === 0x93 && this.#orphans.size > 0) {
      // Known limit (README): QoS 2 ids a process without a store left at the broker
      // fill its Receive Maximum; the broker refuses every new QoS 2 publish, for ever.
      this.knownLimit =
        "v5 Receive Maximum filled by QoS 2 ids of a process that died without a store";
    }
    if (packet.cmd === "publish" && packet.qos === 2) {
      const tag = tagOf(packet);
      if (tag !== undefined) this.#incomingQos2.set(packet.messageId!, tag);
    }
    if (s.connackAt === undefined && packet.cmd !== "connack" && packet.cmd !== "auth") {
      this.#expectClose(s, `a ${packet.cmd.toUpperCase()} before the CONNACK`);
    }
    switch (packet.cmd) {
      case "connack":
        s.connackRead = true;
        if ((packet.returnCode ?? packet.reasonCode ?? 0) === 0) {
          s.connackAt = this.now();
          s.lastWrite = this.now();
          s.sessionPresent = packet.sessionPresent;
          this.#connackSinceSleep = true;
          this.#failedHere = 0;
          const host = s.conn.endpoint.host;
          const moved = this.#on !== undefined && this.#on !== host;
          if (moved) this.#moved(this.#on!, host, packet.sessionPresent);
          this.#newProcess = false;
          this.#on = host;
          // A broker the client comes (back) to may hold a session an unanswered CONNECT made.
          const forgot = this.#forgotSinceConnack || moved;
          if (packet.sessionPresent && this.#connectUnanswered && forgot) {
            // Known limitation (README): the broker lost our session, made a new one for
            // an attempt whose CONNACK never arrived, and now reports it as present. QoS 2
            // messages past PUBREC are then released into a session that never had them.
            for (const record of this.publishes.values()) {
              if (record.qos === 2 && record.received && record.accepted === 0) {
                this.excuse(record);
              }
            }
          }
          this.#connectUnanswered = false;
          this.#forgotSinceConnack = false;
          if (!packet.sessionPresent) {
            this.#sessionLost = true;
            this.#orphans.clear();
            this.#qos2Open.clear();
            // A new session: QoS 2 exchanges start over with the PUBLISH.
            for (const record of this.publishes.values()) record.received = false;
          }
        }
        break;
    }
  }

  /**
   * The client's state is about to handle `packet`, read on connection `id`.
   * Acknowledgements count from here, not from the read: bytes read in one
   * chunk after the connection failed are never handled, and the client
   * rightly re-sends what they acknowledged.
   */
  processed(id: number, packet: Packet): void {
    const s = this.#conns.get(id);
    if (s === undefined) return;
    switch (packet.cmd) {
      case "puback":
      case "pubrec": {
        const tag = s.ids.get(packet.messageId);
        const record = tag === undefined ? undefined : this.publishes.get(tag);
        if (record === undefined) break;
        if (packet.cmd === "puback" && record.qos === 1) record.acked = true;
        if (packet.cmd === "pubrec" && record.qos === 2) record.received = true;
        break;
      }
      case "pubcomp": {
        this.#qos2Open.delete(packet.messageId);
        const tag = s.ids.get(packet.messageId);
        const record = tag === undefined ? undefined : this.publishes.get(tag);
        if (record?.qos === 2 && record.received) record.acked = true;
        break;
      }
    }
  }

  // ---- faults ---------------------------------------------------------------------

  /** The schedule blackholed connection `id` at `now`. */
  blackholed(id: number): void {
    const s = this.#conns.get(id);
    if (s !== undefined && s.connackAt !== undefined && !s.conn.clientClosed) {
      s.deadSince = this.now();
    }
  }

  /**
   * Checks that blackholed connections were given up in time (call at or
   * after the bound). The bound runs from the blackhole, or from when the
   * client took up reading again if it was not reading then (a client behind
   * on its deliveries stops reading, and cannot hear the broker until it
   * reads). Returns when to look again for a connection whose bound moved
   * past now, if any.
   */
  checkDeadLinks(): number | undefined {
    const bound = this.config.keepaliveMs + this.config.responseTimeMs;
    let again: number | undefined;
    for (const s of this.#conns.values()) {
      if (s.deadSince === undefined || s.conn.clientClosed) continue;
      const from = Math.max(s.deadSince, s.conn.readResumedAt);
      const waited = this.now() - from;
      // With keepalive 0 and nothing outstanding, nothing can tell a dead link from a quiet one.
      if (this.config.keepaliveMs > 0 && waited > bound + 1) {
        this.fail(
          "a dead link is detected within keepalive + responseTime",
          `connection ${s.conn.id} dead for ${waited.toFixed(0)} ms (bound ${bound} ms)`,
        );
        s.deadSince = undefined;
      } else if (from > s.deadSince) {
        again = Math.min(again ?? Infinity, from + bound + 2);
      }
    }
    return again;
  }

  // ---- the engine, the supervisor --------------------------------------------------------

  /** After every engine event. */
  afterEvent(engine: Engine): void {
    const s = engine.inspect();
    if (s.timerAt > s.deadline) {
      this.fail(
        "the timer fires by the state's next deadline",
        `timer at ${s.timerAt}, deadline ${s.deadline}`,
      );
    }
    if (
      !(s.inflight <= s.window && s.window <= s.ceiling && s.ceiling <= this.config.maxInflight)
    ) {
      this.fail(
        "in-flight <= window <= maxInflight",
        `inflight ${s.inflight}, window ${s.window}, ceiling ${s.ceiling}, maxInflight ${this.config.maxInflight}`,
      );
    }
    if (
      this.config.protocolVersion === 5 && s.phase === 2 &&
      s.ceiling > this.config.brokerReceiveMaximum
    ) {
      this.fail("v5: the window stays within Receive Maximum", `ceiling ${s.ceiling}`);
    }
  }

  // ---- failover ----------------------------------------------------------------------

  /**
   * The client's CONNACK came from `to`, its previous one from `from`: the sessions
   * differ. What `from` holds waits there (needed only if the client comes back);
   * a return with sessionPresent finds the QoS 2 ids it held.
   */
  #moved(from: string, to: string, present: boolean): void {
    this.#heldAt.set(from, new Map([...this.#orphans, ...this.#qos2Open]));
    this.#orphans = present ? this.#heldAt.get(to) ?? new Map() : new Map();
    this.#heldAt.delete(to);
    this.#qos2Open.clear();
    if (this.#newProcess && present) {
      // Known limit (README): a process resuming from a store does not know which
      // server its predecessor used; on another one that reports a session, QoS 2
      // messages past PUBREC are released into a session that never had them.
      for (const record of this.publishes.values()) {
        if (record.qos === 2 && record.received && record.accepted === 0) this.excuse(record);
      }
    }
    // A live process treats a move as a session loss (MqttState#onConnack): QoS 2
    // exchanges past PUBREC start over with the PUBLISH on the new server.
    for (const record of this.publishes.values()) record.received = false;
    for (const tag of this.undelivered) {
      if (this.#routedAt.get(tag) !== to) this.#heldElsewhere(tag);
    }
    // The client's incoming QoS 2 records belong to one session: a broker that
    // still holds one of these messages may deliver it again.
    for (const tag of this.delivered.keys()) this.excusedDuplicates.add(tag);
  }

  /** `tag` waits at a broker the client is not on: it need not arrive (it may, on a return). */
  #heldElsewhere(tag: string): void {
    this.routedIn.delete(tag);
    this.undelivered.delete(tag);
    this.excusedDuplicates.add(tag);
  }

  /** A new client process starts: it dials the first server, with fresh counts. */
  clientStarted(): void {
    this.#stickTo = undefined;
    this.#dialHost = undefined;
    this.#failedHere = 0;
  }

  /** The supervisor dials `host`. */
  dialing(host: string): void {
    if (this.#stickTo !== undefined && host !== this.#stickTo) {
      this.fail("failover is sticky", `dialled ${host} after a connection to ${this.#stickTo}`);
    }
    this.#stickTo = undefined;
    if (host !== this.#dialHost) {
      // Moved on: count afresh (a first dial is no move: a "network up" before it stays).
      if (this.#dialHost !== undefined) this.#failedHere = 0;
      this.#dialHost = host;
    }
    this.#dialedSinceSleep = true;
    this.#attemptsEnded++; // a new dial: the previous attempt moved on
  }

  /**
   * The network came up: the supervisor counts failures afresh from its next attempt, or
   * the one after (an attempt under way may still fail): not counted until it moves on.
   */
  netCameUp(): void {
    this.#failedHere = -Infinity;
  }

  /** The supervisor is about to sleep `delay` ms before attempt number `attempt`. */
  sleeping(delay: number, attempt: number): void {
    if (this.#dialedSinceSleep && !this.#connackSinceSleep && this.config.servers > 1) {
      if (++this.#failedHere > this.config.bounceAfter) {
        this.fail(
          "failover moves on after bounceAfter failed attempts",
          `${this.#failedHere} failed attempts in a row on ${this.#dialHost}`,
        );
      }
    }
    this.#dialedSinceSleep = false;
    this.#connackSinceSleep = false;
    const { initialDelayMs, maxDelayMs } = this.config;
    const span = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.max(0, attempt - 1));
    const ok = (delay >= span / 2 - 1e-6 && delay <= span + 1e-6) ||
      Math.abs(delay - maxDelayMs) < 1e-6;
    if (!ok) this.fail("back-off within its bounds", `delay ${delay} ms for attempt ${attempt}`);
    if (this.#connectedSinceSleep && attempt !== 1 && Math.abs(delay - maxDelayMs) > 1e-6) {
      this.fail("back-off resets after CONNACK 0", `attempt ${attempt} right after a connection`);
    }
    this.#connectedSinceSleep = false;
    this.#attemptsEnded++;
  }

  /** The attempt's outcome reached the caller (a failed `connect()` call): it moved on. */
  attemptSettled(): void {
    this.#attemptsEnded++;
  }

  /** A connection was accepted (CONNACK 0): the next back-off must start from the first delay. */
  connected(): void {
    this.#connectedSinceSleep = true;
    this.#stickTo = this.#on;
  }

  // ---- messages --------------------------------------------------------------------------

  /** A publish call was made. */
  track(record: PublishRecord): void {
    this.publishes.set(record.tag, record);
    if (record.qos > 0) this.waiting.add(record);
  }

  /**
   * Whether the broker may still hold QoS 2 ids of a process that died
   * without a store: they fill its incoming limit, which the new process
   * cannot see (documented in the README).
   */
  get holdsOrphans(): boolean {
    return this.#orphans.size > 0;
  }

  /** `record` need not arrive any more (withdrawn, refused, or its process died without a store). */
  excuse(record: PublishRecord): void {
    record.excused = true;
    this.waiting.delete(record);
  }

  /** `record`'s call settled. */
  settled(record: PublishRecord, outcome: "resolved" | "rejected"): void {
    record.outcome = outcome;
    if (outcome === "rejected") this.waiting.delete(record);
  }

  /** The broker accepted a message for routing. */
  brokerAccepted(packet: PublishPacket): void {
    const tag = tagOf(packet);
    if (tag === undefined) return;
    const record = this.publishes.get(tag);
    if (record === undefined) return;
    record.accepted++;
    this.waiting.delete(record);
    this.lastProgress = this.now();
    if (record.qos === 2 && record.accepted > 1 && !this.#sessionLost) {
      this.fail("QoS 2 exactly once", `${tag} accepted ${record.accepted} times by the broker`);
    }
  }

  /** The application got an incoming message. */
  appReceived(packet: { topic: string; payload: Uint8Array; qos: number }): void {
    const tag = tagOf(packet);
    if (tag === undefined) return;
    const n = (this.delivered.get(tag) ?? 0) + 1;
    this.delivered.set(tag, n);
    this.undelivered.delete(tag);
    this.lastProgress = this.now();
    if (
      n > 1 && packet.qos === 2 && this.routedIn.get(tag) === 2 && !this.excusedDuplicates.has(tag)
    ) {
      this.fail("incoming QoS 2 delivered exactly once", `${tag} delivered ${n} times`);
    }
  }

  /** A message the broker will deliver to the client at `qos`. */
  routed(tag: string, qos: 0 | 1 | 2, broker: string): void {
    this.#routedAt.set(tag, broker);
    if (this.#on !== undefined && this.#on !== broker) return this.#heldElsewhere(tag);
    this.routedIn.set(tag, qos);
    if (qos > 0 && !this.delivered.has(tag)) this.undelivered.add(tag);
  }

  /**
   * The client started a clean session (a new process with `clean: true`):
   * the broker dropped what it had queued for the old one.
   */
  sessionDiscarded(): void {
    for (const tag of this.routedIn.keys()) {
      if (!this.delivered.has(tag)) this.routedIn.delete(tag);
      this.excusedDuplicates.add(tag);
    }
    this.undelivered.clear();
  }

  /** A client process ended without a store while its session stays at the broker. */
  processLostState(): void {
    for (const [id, tag] of this.#qos2Open) this.#orphans.set(id, tag);
    // The new process cannot know which QoS 2 ids its predecessor had
    // delivered: a broker re-send of one of them is a new message to it.
    for (const tag of this.delivered.keys()) this.excusedDuplicates.add(tag);
  }

  /**
   * A client process with a store ended (killed, or disconnected while a
   * handler ran): a delivered QoS 2 message whose
   * id record was not durable yet (no PUBREC went out) comes again, and the
   * new process cannot tell it from a new one.
   */
  processCrashedWithStore(): void {
    for (const tag of this.delivered.keys()) {
      if (!this.#pubrecWritten.has(tag)) this.excusedDuplicates.add(tag);
    }
  }

  /** The broker restarted without persistence: what it had not delivered is gone. */
  brokerForgot(): void {
    for (const tag of this.routedIn.keys()) {
      if (!this.delivered.has(tag)) this.routedIn.delete(tag);
      this.excusedDuplicates.add(tag);
    }
    this.undelivered.clear();
    this.#sessionLost = true;
    this.#forgotSinceConnack = true;
  }

  // ---- the end ----------------------------------------------------------------------------

  /** After the healed tail of the schedule: nothing lost. */
  checkEnd(): void {
    for (const record of this.publishes.values()) {
      if (record.qos === 0 || record.excused || record.outcome === "rejected") continue;
      if (record.accepted === 0) {
        this.fail(
          "no publish is lost",
          `${record.tag} (QoS ${record.qos}, ${record.outcome}) never reached the broker`,
        );
      }
    }
    for (const [tag, qos] of this.routedIn) {
      if (qos > 0 && !this.delivered.has(tag)) {
        this.fail("incoming QoS 1/2 reaches the application", `${tag} was never delivered`);
      }
    }
  }
}

/** The message tag a publish carries at the start of its payload ("m123 ..."), or undefined. */
export function tagOf(packet: { payload: Uint8Array }): string | undefined {
  const p = packet.payload;
  if (p.length < 2 || (p[0] !== 0x6d && p[0] !== 0x69)) return undefined; // "m" out, "i" in
  let end = 1;
  while (end < p.length && p[end] >= 0x30 && p[end] <= 0x39) end++;
  return end > 1 ? String.fromCharCode(...p.subarray(0, end)) : undefined;
}
