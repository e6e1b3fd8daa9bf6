/**
 * The protocol state of one MQTT session, as an events → actions machine:
 * every event (a packet, a call, the timer, a closed connection, a flushed
 * write, a durable store) comes in with the current time and an
 * {@linkcode Actions} object to fill; nothing here does I/O, reads a clock
 * or keeps a timer. The client applies the actions in one place.
 *
 * @module
 */

import type { ConnackPacket, ConnectPacket, DisconnectPacket, Packet } from "../codec/packets.ts";
import {
  ConnectionLostError,
  ConnectionRefusedError,
  ProtocolError,
  ResponseTimeoutError,
  ServerDisconnectError,
} from "../errors.ts";
import type { Actions } from "./actions.ts";
import {
  type BrokerLimits,
  CONNECTING,
  type Context,
  DOWN,
  NO_LIMITS,
  type SessionConfig,
  UP,
} from "./_context.ts";
import { packetFrame } from "./_frames.ts";
import { Auth } from "./_auth.ts";
import type { Pending } from "./actions.ts";
import { Incoming } from "./_incoming.ts";
import { Liveness } from "./_liveness.ts";
import { Outgoing } from "./_outgoing.ts";
import { Requests } from "./_requests.ts";
import { AdaptiveWindow } from "./_window.ts";
import { OutgoingPublish, Request } from "./records.ts";
import type { RestoredPublish } from "../store/store.ts";

export { CONNECTING, DOWN, type SessionConfig, UP } from "./_context.ts";

/** Packet ids are 16-bit and never 0. */
export const MAX_PACKET_ID = 65_535;

/** What {@linkcode MqttState.inspect} reports, for invariants and tests. */
export interface StateSnapshot {
  /** DOWN, CONNECTING or UP. */
  phase: number;
  /** Written QoS 1/2 publishes not finished. */
  inflight: number;
  /** The window now. */
  window: number;
  /** Its ceiling (maxInflight or the broker's Receive Maximum). */
  ceiling: number;
  /** Publishes and requests not written yet. */
  queued: number;
  /** Requests awaiting their answer. */
  requests: number;
  /** The next deadline. */
  deadline: number;
}

/**
 * Session state of one client, driven by events.
 *
 * @example
 * ```ts
 * import { Actions } from "./actions.ts";
 * import { MqttState } from "./state.ts";
 * const state = new MqttState({
 *   protocolVersion: 4, clientId: "c", keepalive: 60, responseTimeMs: 10_000, clean: false,
 *   maxInflight: 16, maxInflightQos2: 20, highWaterMark: 262_144, sessionExpiry: 0,
 *   durable: false, gated: false,
 * });
 * const out = new Actions();
 * state.onConnecting(0, out); // out.writes holds the CONNECT
 * out.reset();
 * state.onPacket({ cmd: "connack", sessionPresent: false, returnCode: 0 }, 5, out);
 * out.handshake; // { kind: "connected", sessionPresent: false }
 * ```
 */
export class MqttState implements Context {
  readonly config: SessionConfig;
  phase = DOWN;
  epoch = 0;
  limits: BrokerLimits = NO_LIMITS;
  closing = false;
  durableSeq = 0;

  readonly #liveness: Liveness;
  readonly #window: AdaptiveWindow;
  readonly #outgoing: Outgoing;
  readonly #incoming: Incoming;
  readonly #requests: Requests;
  readonly #auth: Auth;
  #seq = 0;
  #lastId = 0;
  #unflushed = 0;
  #everConnected = false; // a session was established: Clean Start/CleanSession 0 from now on
  #firstLegDone = false; // 3.1.1 clean-session dance: the CleanSession=1 connection happened
  #cleanLeg = false; // the connection under way is that first leg
  #closingDeadline = Infinity;
  #disconnectSent = false;
  /** Publishes or ids came from a store: the session predates this process. */
  #restored = false;
  /** The server of the attempt under way, and of the last accepted connection. */
  #dialedServer = "";
  #lastServer = "";
  /** When the broker last answered the oldest thing it owed (see #deadAt). */
  #progressAt = 0;

  /** Empty session state; throws RangeError on nonsensical settings. */
  constructor(config: SessionConfig) {
    if (!(config.maxInflight >= 1 && config.maxInflight <= MAX_PACKET_ID)) {
      throw new RangeError(`maxInflight must be 1..${MAX_PACKET_ID}, got ${config.maxInflight}`);
    }
    this.config = config;
    this.#liveness = new Liveness(config.keepalive * 1000, config.responseTimeMs);
    this.#window = new AdaptiveWindow(config.maxInflight);
    this.#outgoing = new Outgoing(this, this.#liveness, this.#window);
    this.#incoming = new Incoming(this);
    this.#requests = new Requests(this);
    this.#auth = new Auth(this);
  }

  // ---- Context ------------------------------------------------------------------

  /** Whether frames may be written now (the connection is not backed up). */
  writable(): boolean {
    return this.#unflushed <= this.config.highWaterMark;
  }

  /** Queues `frame` for the connection; the client spoke. */
  emit(out: Actions, frame: Uint8Array, urgent: boolean, now: number): void {
    out.write(frame, urgent);
    this.#unflushed += frame.length;
    this.#liveness.wrote(now);
  }

  /** The next free packet id, cycling through 1..65535; 0 when all are in use. */
  nextId(): number {
    const outgoing = this.#outgoing.accepted;
    const pending = this.#requests.pending;
    if (outgoing.size + pending.size >= MAX_PACKET_ID) return 0;
    let id = this.#lastId;
    do {
      id = id === MAX_PACKET_ID ? 1 : id + 1;
    } while (outgoing.has(id) || pending.has(id));
    this.#lastId = id;
    return id;
  }

  /** A new store sequence number (at once durable when the store needs no time). */
  nextSeq(): number {
    const seq = ++this.#seq;
    if (!this.config.gated) this.durableSeq = seq;
    return seq;
  }

  /** The last store sequence number handed out. */
  get seq(): number {
    return this.#seq;
  }

  // ---- inspection ----------------------------------------------------------------

  /** How things stand, for invariants and tests. */
  inspect(): StateSnapshot {
    return {
      phase: this.phase,
      inflight: this.#outgoing.inflight,
      window: this.#window.size,
      ceiling: this.#window.ceiling,
      queued: this.#outgoing.queued + this.#requests.queued,
      requests: this.#requests.pending.size,
      deadline: this.nextDeadline(),
    };
  }

  /** A short account of the outgoing publishes, for traces and failure reports. */
  describe(): string {
    return this.#outgoing.describe();
  }

  /** Written QoS 1/2 publishes not finished yet. */
  get inflight(): number {
    return this.#outgoing.inflight;
  }

  /** The subscriptions the broker granted (filters), for re-subscribing and inspection. */
  get subscriptions(): ReadonlyMap<string, unknown> {
    return this.#requests.held;
  }

  // ---- restoring --------------------------------------------------------------------

  /** Loads what a durable store kept; call before the first connection. */
  restore(
    publishes: readonly RestoredPublish[],
    incoming: readonly number[],
    lastId: number,
  ): void {
    for (const p of publishes) {
      const record = new OutgoingPublish(p.topic, p.payload, p.qos, p.retain, p.properties, true);
      record.id = p.id;
      record.settled = true; // no caller waits for it in this process
      this.#outgoing.restore(record, p.released);
    }
    for (const id of incoming) this.#incoming.restore(id);
    this.#lastId = lastId;
    this.#restored = publishes.length > 0 || incoming.length > 0;
  }

  /** The last packet id handed out (the store keeps it so ids are not reused early). */
  get lastId(): number {
    return this.#lastId;
  }

  // ---- connection events -------------------------------------------------------------

  /** A transport is open: write CONNECT. */
  onConnecting(now: number, out: Actions, server = ""): void {
    const config = this.config;
    this.#dialedServer = server;
    this.phase = CONNECTING;
    this.epoch++;
    this.#unflushed = 0;
    this.#incoming.connecting();
    // 3.1.1 has no session expiry: "clean" is CleanSession=1 on a first
    // connection that is closed at once, then 0 for good (MQTT-3.1.2-6). In
    // v5, Clean Start=1 with a session expiry keeps the new session.
    this.#cleanLeg = config.protocolVersion === 4 && config.clean && !this.#everConnected &&
      !this.#firstLegDone;
    const cleanStart = config.protocolVersion === 4
      ? this.#cleanLeg
      : config.clean && !this.#everConnected;
    const packet: ConnectPacket = {
      cmd: "connect",
      protocolVersion: config.protocolVersion,
      clientId: config.clientId,
      clean: cleanStart,
      keepalive: config.keepalive,
    };
    if (config.username !== undefined) packet.username = config.username;
    if (config.password !== undefined) packet.password = config.password;
    if (config.will !== undefined) packet.will = config.will;
    if (config.protocolVersion === 5) {
      packet.properties = {
        sessionExpiryInterval: config.sessionExpiry,
        ...config.connectProperties,
      };
    }
    this.#liveness.keepaliveMs = config.keepalive * 1000;
    this.#liveness.connecting(now);
    this.emit(out, packetFrame(packet, config.protocolVersion), true, now);
    this.#finishEvent(out);
  }

  /** A packet arrived on the current connection. */
  onPacket(packet: Packet, now: number, out: Actions): void {
    this.#liveness.heard(now);
    if (this.phase === UP) this.#onLivePacket(packet, now, out);
    else if (this.phase === CONNECTING) this.#onHandshakePacket(packet, now, out);
    this.#finishEvent(out);
  }

  #onHandshakePacket(packet: Packet, now: number, out: Actions): void {
    if (packet.cmd === "connack") return this.#onConnack(packet, now, out);
    if (packet.cmd === "auth" && this.config.protocolVersion === 5) {
      this.#auth.packet(packet, out);
      if (out.close !== undefined) this.#fail(out.close, out);
      return;
    }
    const error = new ProtocolError(`expected CONNACK from broker, got ${packet.cmd}`, {
      rule: "MQTT-3.2.0-1",
    });
    this.#fail(error, out);
  }

  #onConnack(packet: ConnackPacket, now: number, out: Actions): void {
    const config = this.config;
    const v5 = config.protocolVersion === 5;
    const code = (v5 ? packet.reasonCode : packet.returnCode) ?? 0;
    if (code !== 0) {
      const p = packet.properties;
      const error = new ConnectionRefusedError(
        code,
        config.protocolVersion,
        p?.reasonString,
        p?.serverReference,
      );
      this.#fail(error, out);
      return;
    }
    if (this.#cleanLeg) {
      // The clean slate is made; keep the session from now on.
      this.#firstLegDone = true;
      this.#cleanLeg = false;
      this.emit(out, packetFrame({ cmd: "disconnect" }, 4), true, now);
      out.endGracefully = true;
      out.handshake = { kind: "redial" };
      out.log("debug", "clean session started; reconnecting with CleanSession=0 to keep it");
      this.phase = DOWN;
      this.#liveness.down();
      return;
    }
    this.limits = v5 ? brokerLimits(packet) : NO_LIMITS;
    this.phase = UP;
    this.#liveness.connected(now);
    this.#progressAt = now;
    const serverKeepAlive = packet.properties?.serverKeepAlive;
    if (serverKeepAlive !== undefined) this.#liveness.keepaliveMs = serverKeepAlive * 1000;
    this.#window.reset(now, this.limits.receiveMaximum, this.#liveness.handshakeRtt);
    // The session is lost when the broker no longer has the one this state
    // knows of (from an earlier connection, or the store of an earlier
    // process), or when this is another server than the last one: the session
    // it reports is not ours (independent brokers) or is shared (a cluster),
    // where starting the exchanges over costs at most a duplicate, while
    // trusting it could lose QoS 2 messages past PUBREC.
    const moved = this.#everConnected && this.#dialedServer !== this.#lastServer;
    this.#lastServer = this.#dialedServer;
    const sessionLost = (this.#everConnected || this.#restored) &&
      (!packet.sessionPresent || moved);
    this.#restored = false;
    this.#everConnected = true;
    if (!packet.sessionPresent || moved) this.#incoming.sessionLost(out);
    out.handshake = { kind: "connected", sessionPresent: packet.sessionPresent };
    const requests = this.#requests.resend(now, out, sessionLost);
    const publishes = this.#outgoing.resend(now, out, sessionLost);
    if (moved) {
      out.log(
        "warn",
        "moved to another server: subscriptions made again, QoS 2 exchanges started over",
      );
    } else if (sessionLost) {
      out.log("warn", "the broker has no session for this client: subscriptions made again");
    }
    if (publishes + requests > 0) {
      out.log("info", `re-sending ${publishes} unacknowledged publishes and ${requests} requests`);
    }
    this.#pump(now, out);
  }

  #onLivePacket(packet: Packet, now: number, out: Actions): void {
    const owed = this.#owed();
    this.#handleLivePacket(packet, now, out);
    // The oldest debt was paid: the next one's responseTime starts now.
    if (owed !== undefined && owed !== this.#owed()) this.#progressAt = now;
    if (this.closing && this.#outgoing.inflight === 0) this.#sendDisconnect(now, out);
  }

  #handleLivePacket(packet: Packet, now: number, out: Actions): void {
    switch (packet.cmd) {
      case "puback":
        this.#outgoing.puback(
          packet.messageId,
          packet.reasonCode ?? 0,
          packet.properties?.reasonString,
          now,
          out,
        );
        break;
      case "pubrec":
        this.#outgoing.pubrec(
          packet.messageId,
          packet.reasonCode ?? 0,
          packet.properties?.reasonString,
          now,
          out,
        );
        break;
      case "pubcomp":
        this.#outgoing.pubcomp(packet.messageId, packet.reasonCode ?? 0, now, out);
        break;
      case "publish":
        this.#incoming.publish(packet, now, out);
        break;
      case "pubrel":
        this.#incoming.pubrel(packet.messageId, now, out);
        break;
      case "suback":
        this.#requests.suback(packet, now, out);
        this.#outgoing.pump(now, out);
        break;
      case "unsuback":
        this.#requests.unsuback(packet, now, out);
        this.#outgoing.pump(now, out);
        break;
      case "pingresp":
        this.#liveness.pingAnswered(now);
        break;
      case "auth":
        if (this.config.protocolVersion === 5) this.#auth.packet(packet, out);
        else out.close = new ProtocolError("AUTH from broker is not part of MQTT 3.1.1");
        break;
      case "disconnect":
        if (this.config.protocolVersion === 5) {
          this.#onServerDisconnect(packet, out);
          break;
        }
        out.close = new ProtocolError("DISCONNECT from broker is not part of MQTT 3.1.1");
        break;
      default:
        out.close = new ProtocolError(`unexpected ${packet.cmd.toUpperCase()} packet from broker`);
    }
  }

  #onServerDisconnect(packet: DisconnectPacket, out: Actions): void {
    const error = new ServerDisconnectError(
      packet.reasonCode ?? 0,
      packet.properties?.reasonString,
      packet.properties?.serverReference,
    );
    out.log("warn", error.message);
    out.close = error;
  }

  /** The connection ended (or the attempt failed before CONNACK). */
  onClose(error: Error | undefined, now: number, out: Actions): void {
    if (this.phase === CONNECTING) {
      out.handshake = {
        kind: "failed",
        error: error ?? new ConnectionLostError("connection closed before CONNACK"),
      };
    }
    this.phase = DOWN;
    this.#liveness.down();
    this.#unflushed = 0;
    this.#auth.down(error, out);
    void now;
    this.#finishEvent(out);
  }

  /** The connection wrote `bytes` of what was emitted. */
  onFlushed(bytes: number, now: number, out: Actions): void {
    const wasBlocked = !this.writable();
    this.#unflushed = Math.max(0, this.#unflushed - bytes);
    if (wasBlocked && this.writable()) this.#pump(now, out);
    this.#finishEvent(out);
  }

  /** The store made everything up to `seq` durable. */
  onDurable(seq: number, now: number, out: Actions): void {
    if (seq > this.durableSeq) {
      this.durableSeq = seq;
      this.#incoming.durable(now, out);
      this.#outgoing.durable(now, out);
    }
    this.#finishEvent(out);
  }

  /** The timer fired. */
  onTimer(now: number, out: Actions): void {
    const liveness = this.#liveness;
    if (this.phase === CONNECTING && now >= liveness.connackDeadline) {
      this.#fail(new ResponseTimeoutError(`no CONNACK within ${liveness.responseTimeMs} ms`), out);
    } else if (this.phase === UP) {
      const dead = this.#deadLinkReason(now);
      if (dead !== undefined) {
        out.log("warn", `link is dead: ${dead}`);
        out.close = new ResponseTimeoutError(dead);
      } else {
        const keepalive = liveness.keepaliveAt() <= now;
        if (keepalive) out.log("debug", "sending PINGREQ");
        // The broker fell silent after a packet while acknowledgements are
        // due: a broker running Nagle's algorithm may hold them until our TCP
        // ACK, which this PINGREQ carries at once.
        if (keepalive || this.#nudgeAt() <= now) this.#ping(now, out);
      }
    }
    if (this.closing && !this.#disconnectSent && now >= this.#closingDeadline) {
      this.#sendDisconnect(now, out);
    }
    this.#finishEvent(out);
  }

  #ping(now: number, out: Actions): void {
    this.#liveness.pinged(now);
    this.emit(out, PINGREQ, true, now);
  }

  /** The application is done with a delivered message. */
  onDelivered(ticket: number, now: number, out: Actions): void {
    if (ticket !== 0) this.#incoming.delivered(ticket, now, out);
    this.#finishEvent(out);
  }

  // ---- calls -------------------------------------------------------------------------

  /** A publish call, validated by the client. */
  onPublish(record: OutgoingPublish, now: number, out: Actions): void {
    this.#outgoing.add(record, now, out);
    this.#finishEvent(out);
  }

  /** A subscribe or unsubscribe call, validated by the client. */
  onRequest(request: Request, now: number, out: Actions): void {
    this.#requests.add(request, now, out);
    this.#finishEvent(out);
  }

  /** The application answered the AUTH challenge of connection `epoch` with `data` (v5). */
  onAuthAnswer(epoch: number, data: Uint8Array, now: number, out: Actions): void {
    this.#auth.answer(epoch, data, now, out);
    this.#finishEvent(out);
  }

  /** A re-authentication call (v5): AUTH with reason 0x19 and `data`. */
  onReauthenticate(call: Pending, data: Uint8Array | undefined, now: number, out: Actions): void {
    this.#auth.reauthenticate(call, data, now, out);
    this.#finishEvent(out);
  }

  /** A call's signal aborted. */
  onAbort(call: OutgoingPublish | Request, reason: Error, now: number, out: Actions): void {
    if (call instanceof OutgoingPublish) this.#outgoing.abort(call, reason, out);
    else this.#requests.abort(call, reason, out);
    void now;
    this.#finishEvent(out);
  }

  /**
   * disconnect(): nothing new goes out; once every written publish is
   * answered (or responseTime passed) DISCONNECT is written and the
   * connection ends politely.
   */
  onDisconnect(now: number, out: Actions): void {
    this.closing = true;
    this.#closingDeadline = now + this.#liveness.responseTimeMs;
    if (this.phase !== UP) {
      this.#disconnectSent = true;
    } else if (this.#outgoing.inflight === 0) {
      this.#sendDisconnect(now, out);
    }
    this.#finishEvent(out);
  }

  /** Whether disconnect() has nothing left to wait for. */
  get disconnected(): boolean {
    return this.closing && (this.#disconnectSent || this.phase !== UP);
  }

  #sendDisconnect(now: number, out: Actions): void {
    if (this.#disconnectSent) return;
    this.#disconnectSent = true;
    if (this.phase !== UP) return;
    const packet: DisconnectPacket = { cmd: "disconnect" };
    if (this.config.protocolVersion === 5) {
      packet.reasonCode = 0;
      // `clean: true` wants a fresh start next time: let the broker drop the session now.
      if (this.config.clean) packet.properties = { sessionExpiryInterval: 0 };
    }
    this.emit(out, packetFrame(packet, this.config.protocolVersion), true, now);
    out.endGracefully = true;
  }

  /** Every caller still waiting, removed; the client rejects them as it shuts down. */
  takeCallers(): (OutgoingPublish | Request | Pending)[] {
    const reauth = this.#auth.takeCaller();
    return [
      ...this.#requests.takeCallers(),
      ...this.#outgoing.takeCallers(),
      ...(reauth ? [reauth] : []),
    ];
  }

  // ---- helpers ---------------------------------------------------------------------

  #pump(now: number, out: Actions): void {
    this.#requests.pump(now, out);
    this.#outgoing.pump(now, out);
  }

  #fail(error: Error, out: Actions): void {
    out.close = error;
    out.handshake = { kind: "failed", error };
    this.phase = DOWN;
    this.#liveness.down();
  }

  #nudgeAt(): number {
    const outgoing = this.#outgoing;
    const window = this.#window;
    return this.#liveness.nudgeAt(
      outgoing.inflight,
      outgoing.inflight >= window.size,
      window.minRtt,
      outgoing.idle,
    );
  }

  /**
   * What the broker owes us first: the oldest unanswered publish (or
   * PUBREL), SUBSCRIBE/UNSUBSCRIBE or PINGREQ; undefined when nothing is owed.
   */
  #owed(): OutgoingPublish | Request | typeof PING_OWED | undefined {
    const publish = this.#outgoing.oldestUnanswered();
    const request = this.#requests.pending.size > 0 ? this.#requests.oldest() : undefined;
    const pingAt = this.#liveness.up ? this.#liveness.pingSentAt : Infinity;
    let owed: OutgoingPublish | Request | typeof PING_OWED | undefined = publish;
    let at = publish?.sentAt ?? Infinity;
    if (request !== undefined && request.sentAt < at) {
      owed = request;
      at = request.sentAt;
    }
    if (pingAt < at) owed = PING_OWED;
    return owed;
  }

  /**
   * When the link counts as dead: the broker gets responseTime to answer the
   * oldest thing it owes, counted from when that was written or from when it
   * answered the one before it, whichever is later. A slow link that keeps
   * answering, one packet after the other, is alive; a half-open one is
   * found within keepalive + responseTime; a broker that answers later
   * packets but not the oldest gets no extra time.
   */
  #deadAt(owed: OutgoingPublish | Request | typeof PING_OWED): number {
    const sentAt = owed === PING_OWED ? this.#liveness.pingSentAt : owed.sentAt;
    return Math.max(sentAt, this.#progressAt) + this.#liveness.responseTimeMs;
  }

  #deadLinkReason(now: number): string | undefined {
    const owed = this.#owed();
    // The same sum the deadline uses: `now - sentAt >= limit` can disagree with it by
    // one rounding, and the timer would then fire at the deadline for ever.
    if (owed === undefined || now < this.#deadAt(owed)) return undefined;
    const limit = this.#liveness.responseTimeMs;
    if (owed === PING_OWED) return `no PINGRESP within ${limit} ms`;
    if (owed instanceof Request) {
      const answer = owed.kind === "subscribe" ? "SUBACK" : "UNSUBACK";
      return `no ${answer} for packet ${owed.id} within ${limit} ms`;
    }
    const answer = owed.qos === 1 ? "PUBACK" : owed.stage === 1 ? "PUBREC" : "PUBCOMP";
    return `no ${answer} for packet ${owed.id} within ${limit} ms`;
  }

  /**
   * The earliest moment at which the timer must look again; Infinity when
   * nothing is pending. Every event ends by putting it in `out.deadline`.
   */
  nextDeadline(): number {
    const liveness = this.#liveness;
    let at = this.closing && !this.#disconnectSent ? this.#closingDeadline : Infinity;
    if (this.phase === CONNECTING) return Math.min(at, liveness.connackDeadline);
    if (this.phase !== UP) return at;
    const keepalive = liveness.keepaliveAt();
    if (keepalive < at) at = keepalive;
    const owed = this.#owed();
    if (owed !== undefined) {
      const dead = this.#deadAt(owed);
      if (dead < at) at = dead;
    }
    const nudge = this.#nudgeAt();
    if (nudge < at) at = nudge;
    return at;
  }

  #finishEvent(out: Actions): void {
    out.deadline = this.nextDeadline();
  }
}

const PINGREQ = new Uint8Array([0xc0, 0x00]);
/** Stands for an unanswered PINGREQ among the things the broker owes. */
const PING_OWED = Symbol("PINGREQ");

function brokerLimits(connack: ConnackPacket): BrokerLimits {
  const p = connack.properties ?? {};
  return {
    receiveMaximum: p.receiveMaximum ?? NO_LIMITS.receiveMaximum,
    maximumPacketSize: p.maximumPacketSize ?? NO_LIMITS.maximumPacketSize,
    topicAliasMaximum: p.topicAliasMaximum ?? 0,
    maximumQoS: p.maximumQoS ?? 2,
    retainAvailable: p.retainAvailable ?? true,
  };
}
