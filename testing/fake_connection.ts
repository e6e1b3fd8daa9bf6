/**
 * {@linkcode FakeConnection}: the broker's side of one client connection of
 * the fake broker, scripted packet by packet by the test.
 *
 * @module
 */

import { encode } from "../codec/encode.ts";
import { decodePacket } from "../codec/decode.ts";
import type { ConnackProperties, ProtocolVersion } from "../codec/packets.ts";
import { type FrameRecord, FrameSplitter } from "./_frames.ts";
import { PacketInbox } from "./_inbox.ts";
import { FrameWriter, type OutgoingFrame } from "./_writer.ts";
import {
  describePacket,
  type IConnectPacket,
  type Packet,
  type PacketOf,
  type SendablePacket,
  toWire,
  v4Code,
  v5Code,
} from "./packets.ts";

/** Options of the waiting calls: how long to wait before rejecting. */
export interface TimeoutOptions {
  /** Milliseconds before the call rejects. Default 5000. */
  timeoutMs?: number;
}

/** Options of {@linkcode FakeConnection.handshake}. */
export interface HandshakeOptions extends TimeoutOptions {
  /**
   * 3.1.1 CONNACK return code to answer with. Default 0 (accepted); to an
   * MQTT 5 client without `reasonCode`, sent as the equivalent reason code
   * (1 → 0x84, 2 → 0x85, 3 → 0x88, 4 → 0x86, 5 → 0x87).
   */
  returnCode?: number;
  /**
   * MQTT 5 CONNACK reason code to answer with. Default 0 (success); to a
   * 3.1.1 client without `returnCode`, sent as the closest return code.
   */
  reasonCode?: number;
  /** CONNACK session-present flag. Default false. */
  sessionPresent?: boolean;
  /**
   * MQTT 5 CONNACK properties (receiveMaximum, maximumPacketSize,
   * topicAliasMaximum, maximumQoS, retainAvailable, serverKeepAlive,
   * assignedClientIdentifier, serverReference, reasonString...). Not sent to
   * a 3.1.1 client.
   */
  properties?: ConnackProperties;
}

/**
 * What a {@linkcode FakeConnection} reports to its owner. {@linkcode FakeBroker}
 * supplies it; tests do not normally need it.
 */
export interface ConnectionObserver {
  /** A frame was read or written. */
  onFrame(record: FrameRecord): void;
  /** The connection ended (either side). */
  onClose(connection: FakeConnection): void;
  /**
   * If set, every packet from the client goes here instead of to
   * {@linkcode FakeConnection.next} (broker mode), with its frame's record.
   */
  onPacket?(connection: FakeConnection, packet: Packet, frame: FrameRecord): void;
}

/** Default of {@linkcode TimeoutOptions.timeoutMs}. */
export const DEFAULT_TIMEOUT_MS = 5000;
const READ_SIZE = 64 * 1024;

/**
 * The broker's side of one client connection. Scripted tests read the
 * client's packets with {@linkcode next}/{@linkcode expect}, answer with
 * {@linkcode send}, and inject faults. Obtained from {@linkcode FakeBroker.accept}.
 *
 * The connection speaks the protocol level of the client's CONNECT (3.1.1
 * or MQTT 5) from then on, both to decode and to encode.
 *
 * @example
 * ```ts ignore
 * import { FakeBroker } from "./testing.ts";
 * await using broker = await FakeBroker.start();
 * const conn = await broker.accept();
 * await conn.handshake();
 * conn.autoPingresp();
 * conn.dropAfterPublishes(2); // the 2nd PUBLISH never gets its PUBACK
 * await conn.expect("publish");
 * await conn.closed;
 * ```
 */
export class FakeConnection {
  /** 1-based index of this connection among those the broker accepted. */
  readonly id: number;
  /** Every frame of this connection, both directions, in order. */
  readonly frames: FrameRecord[] = [];
  /** Resolves when the connection has ended (either side) and its I/O has stopped; never rejects. */
  readonly closed: Promise<void>;

  readonly #conn: Deno.Conn;
  readonly #observer: ConnectionObserver;
  readonly #splitter = new FrameSplitter();
  readonly #writer: FrameWriter;

  readonly #inbox = new PacketInbox();
  #version: ProtocolVersion = 4;
  #connected = false; // a CONNECT has arrived
  #isClosed = false;
  #closedBy: "client" | "broker" = "client";
  #silenced = false;
  #draining = false; // closing once earlier writes are out: no more reads or writes
  #signalClosed!: () => void;
  #autoPingresp = false;
  #autoPuback = false;
  #autoAck = false;
  #dropAfter = 0;
  #publishCount = 0;

  /**
   * Wraps an accepted socket and starts reading from it. {@linkcode FakeBroker}
   * does this; tests get connections from {@linkcode FakeBroker.accept}.
   */
  constructor(conn: Deno.Conn, id: number, observer: ConnectionObserver) {
    this.#conn = conn;
    this.id = id;
    this.#observer = observer;
    this.#writer = new FrameWriter(conn, {
      stopped: () => this.#isClosed || this.#silenced,
      record: (frames, time) => {
        for (const { bytes, packet } of frames) {
          this.#record({ direction: "toClient", connection: this.id, time, bytes, packet });
        }
      },
      failed: () => this.#close("client"),
    });
    const closing = new Promise<void>((resolve) => this.#signalClosed = resolve);
    const reading = this.#readLoop();
    this.closed = Promise.all([closing, reading]).then(() => this.#writer.idle);
  }

  /** Whether the connection has ended (either side). */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /**
   * The protocol level the connection speaks: 4 (MQTT 3.1.1) until the
   * client's CONNECT declares another, then that one (5 for MQTT 5).
   */
  get protocolVersion(): ProtocolVersion {
    return this.#version;
  }

  /**
   * The next packet from the client, in arrival order (packets are buffered
   * until taken). Rejects after `timeoutMs` (default 5000), or once the
   * connection has closed and no buffered packet is left.
   */
  next(options: TimeoutOptions = {}): Promise<Packet> {
    return this.#next("a packet", options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  }

  /**
   * The next packet from the client, which must be a `cmd` packet; rejects,
   * naming what came instead, if it is not, and like {@linkcode next} on
   * timeout or close.
   */
  async expect<C extends Packet["cmd"]>(
    cmd: C,
    options: TimeoutOptions = {},
  ): Promise<PacketOf<C>> {
    const what = cmd.toUpperCase();
    const packet = await this.#next(what, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    if (packet.cmd !== cmd) {
      throw new Error(
        `connection ${this.id}: expected ${what} from the client, got ${describePacket(packet)}`,
      );
    }
    return packet as PacketOf<C>;
  }

  /**
   * Encodes `packet` at the connection's protocol level (a CONNECT at its
   * own), writes it and records it. Any packet of 3.1.1 or MQTT 5 (reason
   * codes and properties on acks, DISCONNECT with a reason code and
   * `serverReference`, AUTH...); the encoder rejects what the level does not
   * allow. Writes are sent in call order. On a closed or silenced connection
   * nothing is written or recorded and the promise still resolves (check
   * {@linkcode isClosed}).
   */
  async send(packet: SendablePacket): Promise<void> {
    const wire = toWire(packet, this.#version);
    const bytes = encode(wire, wire.cmd === "connect" ? wire.protocolVersion : this.#version);
    await this.#write({ bytes, packet: wire });
  }

  /** Writes raw bytes (e.g. a malformed frame), recorded with `packet` undefined. */
  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.#write({ bytes: bytes.slice(), packet: undefined });
  }

  /**
   * Expects a CONNECT, answers it with a CONNACK for the client's protocol
   * level (accepted and session-present false unless `options` say
   * otherwise; MQTT 5: with `options.properties`) and returns the CONNECT.
   */
  async handshake(options: HandshakeOptions = {}): Promise<IConnectPacket> {
    const connect = await this.expect("connect", options);
    const { returnCode, reasonCode } = options;
    const sessionPresent = options.sessionPresent ?? false;
    if (this.#version === 5) {
      await this.send({
        cmd: "connack",
        sessionPresent,
        reasonCode: reasonCode ?? (returnCode === undefined ? 0 : v5Code(returnCode)),
        ...(options.properties ? { properties: options.properties } : {}),
      });
    } else {
      await this.send({
        cmd: "connack",
        sessionPresent,
        returnCode: returnCode ?? (reasonCode === undefined ? 0 : v4Code(reasonCode)),
      });
    }
    return connect;
  }

  /**
   * Answers every PINGREQ with a PINGRESP automatically (`on`, default true).
   * Such PINGREQs are recorded in {@linkcode frames} but not delivered
   * through {@linkcode next}/{@linkcode expect}.
   */
  autoPingresp(on = true): void {
    this.#autoPingresp = on;
  }

  /**
   * Answers every QoS 1 PUBLISH with a PUBACK automatically (`on`, default
   * true). The PUBLISH is still delivered through {@linkcode next}.
   */
  autoPuback(on = true): void {
    this.#autoPuback = on;
  }

  /**
   * Plays a cooperative broker for the flows the test does not script
   * (`on`, default true), so it can focus on one fault:
   *
   * - QoS 1 PUBLISH → PUBACK, as {@linkcode autoPuback};
   * - QoS 2 PUBLISH → PUBREC, then PUBREL → PUBCOMP;
   * - SUBSCRIBE → SUBACK granting each requested QoS;
   * - UNSUBSCRIBE → UNSUBACK (MQTT 5: success for each filter).
   *
   * PUBLISH, SUBSCRIBE and UNSUBSCRIBE are still delivered through
   * {@linkcode next}; the PUBRELs it answers are recorded in
   * {@linkcode frames} but not delivered. PINGREQ is left to
   * {@linkcode autoPingresp}. {@linkcode dropAfterPublishes},
   * {@linkcode nagle} and {@linkcode silence} apply to these answers as to
   * any other: the PUBLISH that triggers the drop is not answered.
   *
   * @example
   * ```ts ignore
   * const conn = await broker.accept();
   * await conn.handshake();
   * conn.autoAck();
   * const publish = await conn.expect("publish"); // already PUBREC'd
   * ```
   */
  autoAck(on = true): void {
    this.#autoAck = on;
  }

  /**
   * Behaves like a broker whose TCP stack runs Nagle's algorithm (mosquitto's
   * default) facing a client whose delayed TCP ACK never fires: once a write
   * is out, later frames are held back until the client sends something, and
   * then go out together (`on`, default true; off releases what is held).
   * A client that stops writing while it waits for held PUBACKs stalls for
   * good here, where a real link would stall for the delayed-ACK time.
   *
   * @example
   * ```ts ignore
   * const conn = await broker.accept();
   * await conn.handshake();
   * conn.autoPuback();
   * conn.nagle(); // PUBACKs after the first wait for the client's next packet
   * ```
   */
  nagle(on = true): void {
    this.#writer.nagle = on;
  }

  /**
   * Closes the connection right after the `n`-th PUBLISH received on this
   * connection (counting those already received) arrives, without acking it
   * (whatever its QoS). In scripted mode that PUBLISH is still delivered
   * through {@linkcode next}; in broker mode it is not routed. If `n`
   * PUBLISHes have already arrived, closes now.
   */
  dropAfterPublishes(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer: ${n}`);
    this.#dropAfter = n;
    if (this.#publishCount >= n) this.closeAfterWrites();
  }

  /**
   * Half-opens the connection: stops reading from the socket and never writes
   * again, but keeps TCP open, as a broker or network that died silently.
   * A read already under way still completes and its frames are recorded,
   * but they are neither answered nor delivered.
   */
  silence(): void {
    this.#silenced = true;
  }

  /** Closes the TCP connection now. Idempotent. */
  close(): void {
    this.#close("broker");
  }

  /**
   * Stops reading and sending at once, and closes the TCP connection once
   * the frames already sent are written (as a broker closes after its
   * DISCONNECT; frames {@linkcode nagle} holds back are dropped). Idempotent.
   */
  closeAfterWrites(): void {
    if (this.#draining || this.#isClosed) return;
    this.#draining = true;
    this.#writer.after(() => this.#close("broker"));
  }

  #close(by: "client" | "broker"): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closedBy = by;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#inbox.rejectAll((what) => this.#closedError(what));
    this.#signalClosed();
    this.#observer.onClose(this);
  }

  #closedError(what: string): Error {
    const who = this.#closedBy === "client"
      ? "the client closed the connection"
      : "the connection was closed by the broker side";
    return new Error(`connection ${this.id}: ${who} while waiting for ${what}`);
  }

  #next(what: string, timeoutMs: number): Promise<Packet> {
    return this.#inbox.take(what, timeoutMs, this.#isClosed, {
      closed: (what) => this.#closedError(what),
      timedOut: (what) =>
        new Error(`connection ${this.id}: timed out after ${timeoutMs} ms waiting for ${what}`),
    });
  }

  #write(frame: OutgoingFrame): Promise<void> {
    if (this.#isClosed || this.#silenced || this.#draining) return Promise.resolve();
    return this.#writer.write(frame);
  }

  #record(record: FrameRecord): void {
    this.frames.push(record);
    this.#observer.onFrame(record);
  }

  async #readLoop(): Promise<void> {
    const buffer = new Uint8Array(READ_SIZE);
    while (!this.#isClosed && !this.#silenced && !this.#draining) {
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        n = null; // reset by the client, or closed by us
      }
      if (n === null) {
        this.#close("client");
        return;
      }
      if (this.#isClosed) return;
      this.#receive(buffer.slice(0, n));
    }
  }

  #receive(chunk: Uint8Array): void {
    if (this.#writer.holding) this.#writer.clientSpoke();
    let frames: Uint8Array[];
    try {
      frames = this.#splitter.push(chunk);
    } catch {
      this.#record({
        direction: "toBroker",
        connection: this.id,
        time: performance.now(),
        bytes: chunk,
      });
      this.#close("broker");
      return;
    }
    for (const bytes of frames) {
      if (this.#isClosed || this.#draining) return;
      let packet: Packet | undefined;
      try {
        packet = decodePacket(bytes, this.#version); // a CONNECT decodes at its own level
      } catch {
        packet = undefined; // malformed: recorded without a packet, and the connection closed
      }
      if (packet?.cmd === "connect" && !this.#connected) {
        this.#connected = true;
        this.#version = packet.protocolVersion; // from now on, both ways
      }
      const record: FrameRecord = {
        direction: "toBroker",
        connection: this.id,
        time: performance.now(),
        bytes,
        packet,
      };
      this.#record(record);
      if (!packet) {
        this.#close("broker"); // malformed frame
        return;
      }
      if (!this.#silenced) this.#dispatch(packet, record);
    }
  }

  #dispatch(packet: Packet, record: FrameRecord): void {
    let drop = false;
    switch (packet.cmd) {
      case "pingreq":
        if (this.#autoPingresp) {
          this.send({ cmd: "pingresp" });
          return;
        }
        break;
      case "pubrel":
        if (this.#autoAck) {
          this.send({ cmd: "pubcomp", messageId: packet.messageId });
          return;
        }
        break;
      case "publish":
        this.#publishCount++;
        drop = this.#dropAfter > 0 && this.#publishCount >= this.#dropAfter;
        if (drop) break;
        if (packet.qos === 1 && (this.#autoPuback || this.#autoAck)) {
          this.send({ cmd: "puback", messageId: packet.messageId });
        } else if (packet.qos === 2 && this.#autoAck) {
          this.send({ cmd: "pubrec", messageId: packet.messageId });
        }
        break;
      case "subscribe":
        if (this.#autoAck) {
          const granted = packet.subscriptions.map((s) => s.qos);
          this.send({ cmd: "suback", messageId: packet.messageId, granted });
        }
        break;
      case "unsubscribe":
        if (this.#autoAck) {
          const granted = this.#version === 5 ? packet.unsubscriptions.map(() => 0) : [];
          this.send({ cmd: "unsuback", messageId: packet.messageId, granted });
        }
        break;
    }
    if (this.#observer.onPacket) {
      if (!drop) this.#observer.onPacket(this, packet, record);
    } else {
      this.#inbox.put(packet);
    }
    if (drop) this.closeAfterWrites();
  }
}
