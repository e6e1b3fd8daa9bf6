/**
 * A small, correct MQTT broker as a pure machine: packets in, packets and
 * closes out, time passed in. MQTT 3.1.1 and 5; QoS 0, 1 and 2 both ways;
 * clean and persistent sessions (v5 session expiry), retained messages,
 * wills (v5 will delay), `+`/`#` wildcards, shared subscriptions
 * (`$share/group/filter`, round robin), v5 subscription options, topic
 * aliases both ways, Receive Maximum and Maximum Packet Size, keepalive
 * enforcement, restarts with or without persistence.
 *
 * The fake broker's plain mode runs it over TCP; the simulator runs it over
 * a simulated network and wraps it with faults. No I/O, no clock, no
 * randomness here.
 *
 * @module
 */

import type {
  ConnackProperties,
  ConnectPacket,
  Packet,
  ProtocolVersion,
  PublishPacket,
  QoS,
  SubscribePacket,
  UnsubscribePacket,
} from "../codec/packets.ts";
import { matchTopic } from "../topic.ts";
import { BrokerSession, type HeldSubscription, type OutboundMessage } from "./_broker_session.ts";

/** Settings of a {@linkcode BrokerCore}. */
export interface BrokerCoreOptions {
  /** QoS 1/2 messages in flight to each client (v5: also its Receive Maximum for us). Default 20. */
  maxInflight?: number;
  /** v5: the Receive Maximum announced and enforced for messages from clients. Default 20. */
  receiveMaximum?: number;
  /** v5: Maximum Packet Size announced and enforced. Default none. */
  maximumPacketSize?: number;
  /** v5: topic aliases clients may use. Default 10. */
  topicAliasMaximum?: number;
  /** Highest QoS accepted. Default 2. */
  maximumQoS?: 0 | 1 | 2;
  /** Whether retained messages are accepted. Default true. */
  retainAvailable?: boolean;
  /** Messages queued per session beyond the window; past it new ones are dropped. Default 10 000. */
  maxQueued?: number;
  /**
   * 3.1.1: QoS 2 messages from one client awaiting PUBREL. Past it, like
   * mosquitto, the message is dropped behind a normal PUBREC. Default 20.
   */
  qos2InLimit?: number;
  /** Answers CONNECT: a CONNACK code (0 accepts). Default: accept everyone. */
  authenticate?(connect: ConnectPacket): number;
  /** Answers each subscription: 0 grants it, a failure code (0x80...) refuses it. Default: grant. */
  authorizeSubscribe?(clientId: string, filter: string): number;
}

/** What the core asks of its host. */
export interface BrokerOutput {
  /** Write `packet` on connection `connection`. */
  send(connection: number, packet: Packet): void;
  /** Close connection `connection` (after writing what was sent before). */
  close(connection: number, reason: string): void;
}

/** A delivery the core made, for tests and the simulator's oracle. */
export interface DeliveryRecord {
  /** The subscriber's client id. */
  clientId: string;
  /** The message as routed (before QoS downgrade). */
  topic: string;
  /** Payload. */
  payload: Uint8Array;
  /** The QoS it goes to the subscriber at. */
  qos: QoS;
}

interface Connection {
  id: number;
  session: BrokerSession | undefined;
  version: ProtocolVersion;
  keepaliveMs: number;
  lastHeard: number;
  aliasesIn: Map<number, string>;
  /** v5: QoS 1/2 publishes from the client not yet answered by us. */
  unanswered: number;
  graceful: boolean;
}

const V5 = 5;

/** See the module doc. */
export class BrokerCore {
  readonly #o:
    & Required<Omit<BrokerCoreOptions, "authenticate" | "authorizeSubscribe" | "maximumPacketSize">>
    & Pick<BrokerCoreOptions, "authenticate" | "authorizeSubscribe" | "maximumPacketSize">;
  readonly #connections = new Map<number, Connection>();
  readonly #sessions = new Map<string, BrokerSession>();
  readonly #retained = new Map<string, OutboundMessage>();
  readonly #shareCursor = new Map<string, number>();
  #assigned = 0;
  /** Called for every message routed to a session (before it is written). */
  onRoute: ((record: DeliveryRecord) => void) | undefined;
  /** Called when a 3.1.1 QoS 2 message is dropped behind a normal PUBREC (the quiet limit). */
  onDrop: ((message: PublishPacket, clientId: string, held: number) => void) | undefined;
  /** Called for every message the broker accepts for routing (QoS 2: at PUBREL), with its publisher. */
  onPublish: ((message: PublishPacket, clientId: string | undefined) => void) | undefined;

  /** A broker with `options`. */
  constructor(options: BrokerCoreOptions = {}) {
    this.#o = {
      maxInflight: options.maxInflight ?? 20,
      receiveMaximum: options.receiveMaximum ?? 20,
      maximumPacketSize: options.maximumPacketSize,
      topicAliasMaximum: options.topicAliasMaximum ?? 10,
      maximumQoS: options.maximumQoS ?? 2,
      retainAvailable: options.retainAvailable ?? true,
      maxQueued: options.maxQueued ?? 10_000,
      qos2InLimit: options.qos2InLimit ?? 20,
      authenticate: options.authenticate,
      authorizeSubscribe: options.authorizeSubscribe,
    };
  }

  /** Client ids of the sessions held. */
  get sessionIds(): string[] {
    return [...this.#sessions.keys()];
  }

  /** The session of `clientId`, for inspection. */
  session(clientId: string): BrokerSession | undefined {
    return this.#sessions.get(clientId);
  }

  /** The retained message of `topic`, for inspection. */
  retained(topic: string): OutboundMessage | undefined {
    return this.#retained.get(topic);
  }

  // ---- connections --------------------------------------------------------------

  /** A transport connection was accepted. */
  accept(connection: number, now: number): void {
    this.#connections.set(connection, {
      id: connection,
      session: undefined,
      version: 4,
      keepaliveMs: 0,
      lastHeard: now,
      aliasesIn: new Map(),
      unanswered: 0,
      graceful: false,
    });
  }

  /** The transport connection ended; without DISCONNECT the will is published. */
  disconnected(connection: number, now: number, out: BrokerOutput): void {
    const conn = this.#connections.get(connection);
    if (conn === undefined) return;
    this.#connections.delete(connection);
    const session = conn.session;
    if (session === undefined || session.connection !== connection) return;
    session.connection = undefined;
    session.aliases = new Map();
    if (!conn.graceful && session.will !== undefined) {
      const delay = (session.will.properties?.willDelayInterval ?? 0) * 1000;
      if (delay > 0 && session.persistent) session.willAt = now + delay;
      else this.#publishWill(session, out);
    }
    if (!session.persistent) this.#sessions.delete(session.clientId);
    else session.expiresAt = session.expiry === Infinity ? Infinity : now + session.expiry * 1000;
  }

  /**
   * The broker process restarts: every connection is gone (no wills: the
   * process died). With `persistence`, sessions and retained messages
   * survive, as mosquitto's persistence database keeps them; without, all
   * is forgotten. Sessions whose client was connected start their expiry
   * at `now` (when given; without it they never expire).
   */
  restart(persistence: boolean, now?: number): number[] {
    const dropped = [...this.#connections.keys()];
    this.#connections.clear();
    if (!persistence) {
      this.#sessions.clear();
      this.#retained.clear();
      return dropped;
    }
    for (const [id, session] of this.#sessions) {
      if (!session.persistent) {
        this.#sessions.delete(id);
        continue;
      }
      if (session.connection !== undefined && now !== undefined) {
        session.expiresAt = session.expiry === Infinity ? Infinity : now + session.expiry * 1000;
      }
      session.connection = undefined;
      session.aliases = new Map();
    }
    return dropped;
  }

  /** Keepalive enforcement, delayed wills, session expiry. */
  tick(now: number, out: BrokerOutput): void {
    for (const conn of [...this.#connections.values()]) {
      if (conn.keepaliveMs > 0 && now >= conn.lastHeard + conn.keepaliveMs * 1.5) {
        if (conn.version === V5) this.#disconnect(conn, 0x8d, out);
        out.close(conn.id, "keepalive timeout");
        this.disconnected(conn.id, now, out);
      }
    }
    for (const [id, session] of this.#sessions) {
      if (session.connection !== undefined) continue;
      if (now >= session.willAt) {
        session.willAt = Infinity;
        this.#publishWill(session, out);
      }
      if (now >= session.expiresAt) this.#sessions.delete(id);
    }
  }

  /** When {@linkcode tick} must next run (Infinity: nothing pending). */
  nextDeadline(): number {
    let at = Infinity;
    for (const conn of this.#connections.values()) {
      if (conn.keepaliveMs > 0) at = Math.min(at, conn.lastHeard + conn.keepaliveMs * 1.5);
    }
    for (const session of this.#sessions.values()) {
      if (session.connection !== undefined) continue;
      at = Math.min(at, session.willAt, session.expiresAt);
    }
    return at;
  }

  // ---- packets --------------------------------------------------------------------

  /** A packet from connection `connection`. */
  receive(connection: number, packet: Packet, now: number, out: BrokerOutput): void {
    const conn = this.#connections.get(connection);
    if (conn === undefined) return;
    conn.lastHeard = now;
    const session = conn.session;
    if (session === undefined) {
      if (packet.cmd === "connect") this.#connect(conn, packet, now, out);
      else this.#violation(conn, `${packet.cmd} before CONNECT`, 0x82, now, out);
      return;
    }
    switch (packet.cmd) {
      case "publish":
        return this.#publishIn(conn, session, packet, now, out);
      case "puback":
      case "pubcomp": {
        const entry = session.inflight.get(packet.messageId);
        const expected = packet.cmd === "puback" ? "publish" : "pubrel";
        const qos = packet.cmd === "puback" ? 1 : 2;
        if (entry && entry.stage === expected && entry.message.qos === qos) {
          session.inflight.delete(packet.messageId);
          this.#drain(session, out);
        }
        return;
      }
      case "pubrec": {
        const entry = session.inflight.get(packet.messageId);
        if (entry && entry.message.qos === 2) {
          if ((packet.reasonCode ?? 0) >= 0x80) {
            session.inflight.delete(packet.messageId);
            this.#drain(session, out);
            return;
          }
          entry.stage = "pubrel";
        }
        out.send(conn.id, { cmd: "pubrel", messageId: packet.messageId });
        return;
      }
      case "pubrel": {
        const held = session.incoming.get(packet.messageId);
        session.incoming.delete(packet.messageId);
        if (held !== undefined && held !== "dropped") this.#route(held, session, out);
        const reasonCode = held === undefined && conn.version === V5 ? 0x92 : 0;
        out.send(conn.id, { cmd: "pubcomp", messageId: packet.messageId, reasonCode });
        return;
      }
      case "subscribe":
        return this.#subscribe(conn, session, packet, out);
      case "unsubscribe":
        return this.#unsubscribe(conn, session, packet, out);
      case "pingreq":
        out.send(conn.id, { cmd: "pingresp" });
        return;
      case "disconnect":
        conn.graceful = (packet.reasonCode ?? 0) !== 0x04;
        if (conn.version === V5 && packet.properties?.sessionExpiryInterval !== undefined) {
          session.expiry = expirySeconds(packet.properties.sessionExpiryInterval);
        }
        out.close(conn.id, "DISCONNECT");
        this.disconnected(conn.id, now, out);
        return;
      default:
        this.#violation(
          conn,
          `unexpected ${packet.cmd.toUpperCase()} from a client`,
          0x82,
          now,
          out,
        );
    }
  }

  #connect(conn: Connection, packet: ConnectPacket, now: number, out: BrokerOutput): void {
    const v5 = packet.protocolVersion === V5;
    conn.version = packet.protocolVersion;
    conn.keepaliveMs = packet.keepalive * 1000;
    const refusal = this.#o.authenticate?.(packet) ?? 0;
    if (refusal !== 0) {
      out.send(conn.id, connack(v5, refusal, false));
      out.close(conn.id, "refused");
      this.#connections.delete(conn.id);
      return;
    }
    let clientId = packet.clientId;
    let assigned: string | undefined;
    if (clientId.length === 0) {
      if (!packet.clean && !v5) {
        out.send(conn.id, connack(false, 2, false));
        out.close(conn.id, "empty client id with clean session 0");
        this.#connections.delete(conn.id);
        return;
      }
      clientId = assigned = `auto-${++this.#assigned}`;
    }
    let session = this.#sessions.get(clientId);
    if (session?.connection !== undefined) {
      // Session takeover (MQTT-3.1.4-2): the old connection goes, with its will.
      const old = this.#connections.get(session.connection);
      if (old !== undefined) {
        if (old.version === V5) this.#disconnect(old, 0x8e, out);
        out.close(old.id, "session taken over");
        this.disconnected(old.id, now, out);
      }
      session = this.#sessions.get(clientId);
    }
    const present = session !== undefined && !packet.clean;
    if (!present) {
      session = new BrokerSession(clientId);
      this.#sessions.set(clientId, session);
    }
    const s = session!;
    s.connection = conn.id;
    s.version = packet.protocolVersion;
    s.expiry = v5
      ? expirySeconds(packet.properties?.sessionExpiryInterval ?? 0)
      : packet.clean
      ? 0
      : Infinity;
    s.expiresAt = Infinity;
    s.willAt = Infinity;
    s.will = packet.will;
    s.receiveMaximum = packet.properties?.receiveMaximum ?? 65_535;
    s.maximumPacketSize = packet.properties?.maximumPacketSize ?? Infinity;
    s.topicAliasMaximum = packet.properties?.topicAliasMaximum ?? 0;
    s.aliases = new Map();
    conn.session = s;
    const ack = connack(v5, 0, present);
    if (v5) ack.properties = this.#connackProperties(assigned);
    out.send(conn.id, ack);
    // Resume: re-send what was in flight (PUBLISH with DUP, or PUBREL), then the queue.
    for (const [id, entry] of s.inflight) {
      if (entry.stage === "pubrel") out.send(conn.id, { cmd: "pubrel", messageId: id });
      else this.#write(s, conn.id, entry.message, id, true, out);
    }
    this.#drain(s, out);
  }

  #connackProperties(assigned: string | undefined): ConnackProperties {
    const o = this.#o;
    const p: ConnackProperties = {
      receiveMaximum: o.receiveMaximum,
      topicAliasMaximum: o.topicAliasMaximum,
    };
    if (o.maximumPacketSize !== undefined) p.maximumPacketSize = o.maximumPacketSize;
    if (o.maximumQoS < 2) p.maximumQoS = o.maximumQoS as 0 | 1;
    if (!o.retainAvailable) p.retainAvailable = false;
    if (assigned !== undefined) p.assignedClientIdentifier = assigned;
    return p;
  }

  #publishIn(
    conn: Connection,
    session: BrokerSession,
    packet: PublishPacket,
    now: number,
    out: BrokerOutput,
  ): void {
    const v5 = conn.version === V5;
    let topic = packet.topic;
    const alias = packet.properties?.topicAlias;
    if (alias !== undefined) {
      if (!v5 || alias > this.#o.topicAliasMaximum) {
        return this.#violation(conn, `topic alias ${alias} over the maximum`, 0x94, now, out);
      }
      if (topic.length > 0) conn.aliasesIn.set(alias, topic);
      else topic = conn.aliasesIn.get(alias) ?? "";
      if (topic.length === 0) {
        return this.#violation(conn, `unknown topic alias ${alias}`, 0x82, now, out);
      }
    }
    if (packet.qos > this.#o.maximumQoS) {
      return this.#violation(conn, `QoS ${packet.qos} over the maximum`, 0x9b, now, out);
    }
    if (packet.retain && !this.#o.retainAvailable) {
      return this.#violation(conn, "retain not available", 0x9a, now, out);
    }
    const message: PublishPacket = { ...packet, topic };
    if (message.properties?.topicAlias !== undefined) {
      const { topicAlias: _, ...rest } = message.properties;
      message.properties = rest;
    }
    const id = packet.messageId ?? 0;
    if (packet.qos === 0) {
      this.#route(message, session, out);
    } else if (packet.qos === 1) {
      const matched = this.#route(message, session, out);
      out.send(conn.id, { cmd: "puback", messageId: id, reasonCode: v5 && !matched ? 0x10 : 0 });
    } else {
      if (!session.incoming.has(id)) {
        if (v5 && session.incoming.size >= this.#o.receiveMaximum) {
          return this.#violation(conn, "Receive Maximum exceeded", 0x93, now, out);
        }
        // mosquitto's quiet limit for 3.1.1 clients: the message is lost behind a normal PUBREC.
        const full = !v5 && session.incoming.size >= this.#o.qos2InLimit;
        session.incoming.set(id, full ? "dropped" : message);
        if (full) this.onDrop?.(message, session.clientId, session.incoming.size - 1);
      }
      out.send(conn.id, { cmd: "pubrec", messageId: id });
    }
  }

  #subscribe(
    conn: Connection,
    session: BrokerSession,
    packet: SubscribePacket,
    out: BrokerOutput,
  ): void {
    const granted: number[] = [];
    const retainedToSend: [HeldSubscription, OutboundMessage][] = [];
    for (const sub of packet.subscriptions) {
      const refusal = this.#o.authorizeSubscribe?.(session.clientId, sub.topic) ?? 0;
      if (refusal >= 0x80) {
        granted.push(refusal);
        continue;
      }
      const qos = Math.min(sub.qos, this.#o.maximumQoS) as QoS;
      const existed = session.subscriptions.has(sub.topic);
      const held: HeldSubscription = { ...sub, qos };
      const identifier = packet.properties?.subscriptionIdentifier;
      if (identifier !== undefined) held.identifier = identifier;
      session.subscriptions.set(sub.topic, held);
      granted.push(qos);
      const shared = sub.topic.startsWith("$share/");
      const rh = sub.rh ?? 0;
      if (shared || rh === 2 || (rh === 1 && existed)) continue;
      for (const [topic, message] of this.#retained) {
        if (matchTopic(sub.topic, topic)) retainedToSend.push([held, message]);
      }
    }
    out.send(conn.id, { cmd: "suback", messageId: packet.messageId, granted });
    for (const [sub, message] of retainedToSend) {
      this.#enqueue(
        session,
        { ...message, qos: Math.min(message.qos, sub.qos) as QoS, retain: true },
        sub,
        out,
      );
    }
  }

  #unsubscribe(
    conn: Connection,
    session: BrokerSession,
    packet: UnsubscribePacket,
    out: BrokerOutput,
  ): void {
    const granted = packet.unsubscriptions.map((filter) =>
      session.subscriptions.delete(filter) ? 0 : 0x11
    );
    out.send(conn.id, {
      cmd: "unsuback",
      messageId: packet.messageId,
      granted: conn.version === V5 ? granted : [],
    });
  }

  /** A protocol violation: v5 gets a DISCONNECT with `reasonCode`; the connection closes. */
  #violation(
    conn: Connection,
    why: string,
    reasonCode: number,
    now: number,
    out: BrokerOutput,
  ): void {
    if (conn.version === V5 && conn.session !== undefined) this.#disconnect(conn, reasonCode, out);
    out.close(conn.id, why);
    this.disconnected(conn.id, now, out);
  }

  #disconnect(conn: Connection, reasonCode: number, out: BrokerOutput): void {
    out.send(conn.id, { cmd: "disconnect", reasonCode });
  }

  /** Publishes `message` as if a client had (a test's or the simulator's source of traffic). */
  inject(message: PublishPacket, out: BrokerOutput): boolean {
    return this.#route(message, undefined, out);
  }

  // ---- routing ------------------------------------------------------------------------

  /** Sends `message` to every matching session; whether any matched. */
  #route(message: PublishPacket, from: BrokerSession | undefined, out: BrokerOutput): boolean {
    this.onPublish?.(message, from?.clientId);
    if (message.retain) {
      if (message.payload.length === 0) this.#retained.delete(message.topic);
      else this.#retained.set(message.topic, toOutbound(message));
    }
    let matched = false;
    const groups = new Map<string, [BrokerSession, HeldSubscription][]>();
    for (const session of this.#sessions.values()) {
      let best: HeldSubscription | undefined;
      const identifiers: number[] = [];
      for (const sub of session.subscriptions.values()) {
        if (!matchTopic(sub.topic, message.topic)) continue;
        if (sub.topic.startsWith("$share/")) {
          const key = sub.topic;
          (groups.get(key) ?? groups.set(key, []).get(key)!).push([session, sub]);
          continue;
        }
        if (sub.nl && session === from) continue;
        if (sub.identifier !== undefined) identifiers.push(sub.identifier);
        if (best === undefined || sub.qos > best.qos) best = sub;
      }
      if (best === undefined) continue;
      matched = true;
      this.#deliver(session, message, best, identifiers, out);
    }
    for (const [key, members] of groups) {
      matched = true;
      const online = members.filter(([s]) => s.connection !== undefined);
      const pool = online.length > 0 ? online : members;
      const cursor = (this.#shareCursor.get(key) ?? 0) % pool.length;
      this.#shareCursor.set(key, cursor + 1);
      const [session, sub] = pool[cursor];
      this.#deliver(
        session,
        message,
        sub,
        sub.identifier !== undefined ? [sub.identifier] : [],
        out,
      );
    }
    return matched;
  }

  #deliver(
    session: BrokerSession,
    message: PublishPacket,
    sub: HeldSubscription,
    identifiers: number[],
    out: BrokerOutput,
  ): void {
    const outbound = toOutbound(message);
    outbound.qos = Math.min(message.qos, sub.qos) as QoS;
    outbound.retain = session.version === V5 && sub.rap ? message.retain : false;
    if (session.version === V5 && identifiers.length > 0) {
      outbound.properties = { ...outbound.properties, subscriptionIdentifier: identifiers };
    }
    this.#enqueue(session, outbound, sub, out);
  }

  #enqueue(
    session: BrokerSession,
    message: OutboundMessage,
    _sub: HeldSubscription,
    out: BrokerOutput,
  ): void {
    this.onRoute?.({
      clientId: session.clientId,
      topic: message.topic,
      payload: message.payload,
      qos: message.qos,
    });
    if (message.qos === 0) {
      if (session.connection !== undefined) {
        this.#write(session, session.connection, message, 0, false, out);
      }
      return;
    }
    if (session.queue.length >= this.#o.maxQueued) return; // dropped, as a full broker does
    session.queue.push(message);
    this.#drain(session, out);
  }

  /** Writes queued messages while the client's window has room. */
  #drain(session: BrokerSession, out: BrokerOutput): void {
    const connection = session.connection;
    if (connection === undefined) return;
    const window = Math.min(this.#o.maxInflight, session.receiveMaximum);
    while (session.queue.length > 0 && session.inflight.size < window) {
      const message = session.queue.shift()!;
      const id = session.nextId();
      session.inflight.set(id, { message, stage: "publish" });
      this.#write(session, connection, message, id, false, out);
    }
  }

  #write(
    session: BrokerSession,
    connection: number,
    message: OutboundMessage,
    id: number,
    dup: boolean,
    out: BrokerOutput,
  ): void {
    const packet: PublishPacket = {
      cmd: "publish",
      topic: message.topic,
      payload: message.payload,
      qos: message.qos,
      retain: message.retain,
      dup,
    };
    if (message.qos > 0) packet.messageId = id;
    if (session.version === V5) {
      if (message.properties !== undefined) packet.properties = { ...message.properties };
      // Aliases for repeated topics, as far as the client allows.
      const alias = session.aliases.get(message.topic);
      if (alias !== undefined && !dup) {
        packet.properties = { ...packet.properties, topicAlias: alias };
        packet.topic = "";
      } else if (alias === undefined && session.aliases.size < session.topicAliasMaximum) {
        const next = session.aliases.size + 1;
        session.aliases.set(message.topic, next);
        packet.properties = { ...packet.properties, topicAlias: next };
      }
    } else {
      delete packet.properties;
    }
    out.send(connection, packet);
  }

  #publishWill(session: BrokerSession, out: BrokerOutput): void {
    const will = session.will;
    session.will = undefined;
    if (will === undefined) return;
    const properties = will.properties === undefined ? undefined : (() => {
      const { willDelayInterval: _, ...rest } = will.properties!;
      return rest;
    })();
    this.#route(
      {
        cmd: "publish",
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        dup: false,
        ...(properties ? { properties } : {}),
      },
      session,
      out,
    );
  }
}

function connack(
  v5: boolean,
  code: number,
  sessionPresent: boolean,
): Extract<Packet, { cmd: "connack" }> {
  return v5
    ? { cmd: "connack", sessionPresent, reasonCode: code }
    : { cmd: "connack", sessionPresent, returnCode: code };
}

function expirySeconds(interval: number): number {
  return interval === 0xffff_ffff ? Infinity : interval;
}

function toOutbound(message: PublishPacket): OutboundMessage {
  const outbound: OutboundMessage = {
    topic: message.topic,
    payload: message.payload,
    qos: message.qos,
    retain: message.retain,
  };
  if (message.properties !== undefined) {
    const { topicAlias: _, subscriptionIdentifier: __, ...rest } = message.properties;
    if (Object.keys(rest).length > 0) outbound.properties = rest;
  }
  return outbound;
}
