/**
 * A fake MQTT 3.1.1 broker for tests, on 127.0.0.1 and a free port.
 *
 * - **Scripted mode** (the default): the test accepts each client connection
 *   with {@linkcode FakeBroker.accept} and plays the broker's side packet by
 *   packet with {@linkcode FakeConnection.expect} and
 *   {@linkcode FakeConnection.send}, and injects faults: withheld or late
 *   acks, a connection dropped after the Nth PUBLISH, a half-open socket,
 *   malformed bytes.
 * - **Broker mode** (`mode: "broker"`): a small real broker (QoS 0/1 routing,
 *   `+`/`#` wildcards, retained messages, persistent sessions, wills) so
 *   examples and tests run without an external broker.
 *
 * Both modes record every frame in both directions with its time, in
 * {@linkcode FakeBroker.frames}.
 *
 * @example
 * ```ts ignore
 * import { FakeBroker } from "./testing.ts";
 * await using broker = await FakeBroker.start();
 * // ... point a client at broker.hostname:broker.port ...
 * const conn = await broker.accept();
 * const connect = await conn.handshake(); // expects CONNECT, answers CONNACK 0
 * const publish = await conn.expect("publish");
 * await conn.send({ cmd: "puback", messageId: publish.messageId });
 * ```
 *
 * @module
 */

import { encode } from "./codec/encode.ts";
import { decodePacket } from "./codec/decode.ts";
import type { Packet as WirePacket } from "./codec/packets.ts";
import { matchTopic } from "./topic.ts";

/** The NetInterface test double, here too so everything for tests comes from one module. */
export {
  type EnsureUpOptions,
  type NetCall,
  type NetInterface,
  RecordingNetInterface,
} from "./wifi.ts";

/** A QoS level. The fake broker itself handles 0 and 1. */
export type QoS = 0 | 1 | 2;

/** CONNECT: the client opens a session. */
export interface IConnectPacket {
  /** Packet type. */
  cmd: "connect";
  /** Client identifier; may be empty with `clean: true`. */
  clientId: string;
  /** Protocol level: 4 for MQTT 3.1.1. */
  protocolVersion?: 3 | 4 | 5;
  /** Protocol name. */
  protocolId?: "MQTT" | "MQIsdp";
  /** CleanSession flag. */
  clean?: boolean;
  /** Keepalive in seconds; 0 disables it. */
  keepalive?: number;
  /** User name, if any. */
  username?: string;
  /** Password bytes, if any. */
  password?: Uint8Array;
  /** Last will, published if the connection ends without DISCONNECT. */
  will?: {
    /** Topic of the will message. */
    topic: string;
    /** Payload of the will message. */
    payload: string | Uint8Array;
    /** QoS of the will message. */
    qos?: QoS;
    /** Whether the will message is retained. */
    retain?: boolean;
  };
}

/** CONNACK: the broker accepts (return code 0) or refuses (1-5) a CONNECT. */
export interface IConnackPacket {
  /** Packet type. */
  cmd: "connack";
  /** 0 accepted; 1-5 refused (see MQTT 3.1.1 section 3.2.2.3). */
  returnCode?: number;
  /** Whether the broker kept a session for this client. */
  sessionPresent: boolean;
}

/** PUBLISH: an application message, in either direction. */
export interface IPublishPacket {
  /** Packet type. */
  cmd: "publish";
  /** Topic name. */
  topic: string;
  /** Payload; parsed packets carry bytes. */
  payload: string | Uint8Array;
  /** QoS level. */
  qos: QoS;
  /** DUP flag: a re-delivery of an earlier PUBLISH. */
  dup: boolean;
  /** RETAIN flag. */
  retain: boolean;
  /** Packet identifier (QoS 1 and 2 only). */
  messageId?: number;
}

/** PUBACK: acknowledges a QoS 1 PUBLISH. */
export interface IPubackPacket {
  /** Packet type. */
  cmd: "puback";
  /** Packet identifier of the acknowledged PUBLISH. */
  messageId?: number;
}

/** PUBREC: QoS 2, first acknowledgement (not used by the fake broker). */
export interface IPubrecPacket {
  /** Packet type. */
  cmd: "pubrec";
  /** Packet identifier. */
  messageId?: number;
}

/** PUBREL: QoS 2, release (not used by the fake broker). */
export interface IPubrelPacket {
  /** Packet type. */
  cmd: "pubrel";
  /** Packet identifier. */
  messageId?: number;
}

/** PUBCOMP: QoS 2, completion (not used by the fake broker). */
export interface IPubcompPacket {
  /** Packet type. */
  cmd: "pubcomp";
  /** Packet identifier. */
  messageId?: number;
}

/** One topic filter of a SUBSCRIBE. */
export interface ISubscription {
  /** Topic filter, may contain `+` and `#`. */
  topic: string;
  /** Requested QoS. */
  qos: QoS;
}

/** SUBSCRIBE: the client asks for topic filters. */
export interface ISubscribePacket {
  /** Packet type. */
  cmd: "subscribe";
  /** Packet identifier. */
  messageId?: number;
  /** The requested filters. */
  subscriptions: ISubscription[];
}

/** SUBACK: the granted QoS per filter, or 0x80 for a refused one. */
export interface ISubackPacket {
  /** Packet type. */
  cmd: "suback";
  /** Packet identifier of the SUBSCRIBE. */
  messageId?: number;
  /** One return code per requested filter: 0, 1, 2 or 0x80. */
  granted: number[];
}

/** UNSUBSCRIBE: the client drops topic filters. */
export interface IUnsubscribePacket {
  /** Packet type. */
  cmd: "unsubscribe";
  /** Packet identifier. */
  messageId?: number;
  /** The filters to drop. */
  unsubscriptions: string[];
}

/** UNSUBACK: acknowledges an UNSUBSCRIBE. */
export interface IUnsubackPacket {
  /** Packet type. */
  cmd: "unsuback";
  /** Packet identifier of the UNSUBSCRIBE. */
  messageId?: number;
}

/** PINGREQ: the client's keepalive ping. */
export interface IPingreqPacket {
  /** Packet type. */
  cmd: "pingreq";
}

/** PINGRESP: the broker's answer to PINGREQ. */
export interface IPingrespPacket {
  /** Packet type. */
  cmd: "pingresp";
}

/** DISCONNECT: the client ends the session cleanly (no will). */
export interface IDisconnectPacket {
  /** Packet type. */
  cmd: "disconnect";
}

/**
 * An MQTT 3.1.1 packet, in the object shape mqtt-packet parses and generates
 * (parsed packets may carry more fields, e.g. `length`). A packet typed with
 * mqtt-packet's own 3.1.1 interfaces can be passed where this is expected.
 */
export type Packet =
  | IConnectPacket
  | IConnackPacket
  | IPublishPacket
  | IPubackPacket
  | IPubrecPacket
  | IPubrelPacket
  | IPubcompPacket
  | ISubscribePacket
  | ISubackPacket
  | IUnsubscribePacket
  | IUnsubackPacket
  | IPingreqPacket
  | IPingrespPacket
  | IDisconnectPacket;

/** One MQTT frame that crossed a fake-broker connection, in either direction. */
export interface FrameRecord {
  /** `"toBroker"` for frames the client sent, `"toClient"` for frames the broker sent. */
  direction: "toBroker" | "toClient";
  /** 1-based index of the accepted connection ({@linkcode FakeConnection.id}). */
  connection: number;
  /** `performance.now()` when the frame was read, or when its write started. */
  time: number;
  /** The raw bytes of the frame (for {@linkcode FakeConnection.sendRaw}: the raw bytes sent). */
  bytes: Uint8Array;
  /** The parsed packet; undefined for raw sends and for malformed frames. */
  packet?: Packet;
}

/** Options of {@linkcode FakeBroker.start}. */
export interface FakeBrokerOptions {
  /** `"scripted"` (default): the test plays the broker. `"broker"`: a plain working broker. */
  mode?: "scripted" | "broker";
  /** Address to listen on. Default `"127.0.0.1"`. */
  hostname?: string;
  /** Port to listen on. Default 0: a free port, see {@linkcode FakeBroker.port}. */
  port?: number;
}

/** Options of the waiting calls: how long to wait before rejecting. */
export interface TimeoutOptions {
  /** Milliseconds before the call rejects. Default 5000. */
  timeoutMs?: number;
}

/** Options of {@linkcode FakeConnection.handshake}. */
export interface HandshakeOptions extends TimeoutOptions {
  /** CONNACK return code to answer with. Default 0 (accepted). */
  returnCode?: number;
  /** CONNACK session-present flag. Default false. */
  sessionPresent?: boolean;
}

/** Options of {@linkcode FakeBroker.waitFor}. */
export interface WaitForOptions extends TimeoutOptions {
  /** What is being waited for, named in the timeout error. */
  what?: string;
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
   * {@linkcode FakeConnection.next} (broker mode).
   */
  onPacket?(connection: FakeConnection, packet: Packet): void;
}

const DEFAULT_TIMEOUT_MS = 5000;
const READ_SIZE = 64 * 1024;

/** The codec's shape of a packet a test wrote (string payloads allowed, optional fields filled). */
function toWire(packet: Packet): WirePacket {
  const p = { ...packet } as Record<string, unknown>;
  if (typeof p.payload === "string") p.payload = new TextEncoder().encode(p.payload);
  if (p.cmd === "unsuback" && p.granted === undefined) p.granted = [];
  if (p.cmd === "connect" && p.protocolVersion === undefined) p.protocolVersion = 4;
  if (p.cmd === "connack" && p.returnCode === undefined) p.returnCode = 0;
  return p as unknown as WirePacket;
}

/**
 * Splits a byte stream into whole MQTT frames using the fixed header's
 * remaining length, however the reads cut it.
 */
class FrameSplitter {
  #pending: Uint8Array = new Uint8Array(0);

  /** Appends `chunk` and returns every frame now complete. Throws on a bad length field. */
  push(chunk: Uint8Array): Uint8Array[] {
    const bytes = this.#pending.length === 0 ? chunk : concat([this.#pending, chunk]);
    const frames: Uint8Array[] = [];
    let offset = 0;
    while (offset < bytes.length) {
      const length = frameLength(bytes, offset);
      if (length === undefined || offset + length > bytes.length) break;
      frames.push(bytes.slice(offset, offset + length));
      offset += length;
    }
    this.#pending = bytes.slice(offset);
    return frames;
  }
}

/** Total length of the frame at `offset`, undefined while its header is incomplete. */
function frameLength(bytes: Uint8Array, offset: number): number | undefined {
  let remaining = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    if (offset + i >= bytes.length) return undefined;
    const digit = bytes[offset + i];
    remaining += (digit & 0x7f) * multiplier;
    if ((digit & 0x80) === 0) return 1 + i + remaining;
    multiplier *= 128;
  }
  throw new Error("malformed remaining length (more than 4 bytes)");
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** A short description of a packet for error messages. */
function describePacket(packet: Packet): string {
  const parts: string[] = [packet.cmd.toUpperCase()];
  if (packet.cmd === "publish") {
    parts.push(`topic=${JSON.stringify(packet.topic)} qos=${packet.qos}`);
    if (packet.dup) parts.push("dup");
  }
  if ("messageId" in packet && packet.messageId !== undefined) parts.push(`id=${packet.messageId}`);
  return parts.join(" ");
}

interface PacketWaiter {
  resolve(packet: Packet): void;
  reject(error: Error): void;
  what: string;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The broker's side of one client connection. Scripted tests read the
 * client's packets with {@linkcode next}/{@linkcode expect}, answer with
 * {@linkcode send}, and inject faults. Obtained from {@linkcode FakeBroker.accept}.
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

  readonly #queue: Packet[] = [];
  readonly #waiters: PacketWaiter[] = [];
  #writeChain: Promise<void> = Promise.resolve();
  #isClosed = false;
  #closedBy: "client" | "broker" = "client";
  #silenced = false;
  #draining = false; // dropAfterPublishes fired: flush earlier writes, then close
  #signalClosed!: () => void;
  #autoPingresp = false;
  #autoPuback = false;
  #dropAfter = 0;
  #publishCount = 0;
  #nagle = false;
  #unacknowledged = false; // nagle: a write the client has not yet "ACKed" by sending
  #held: { bytes: Uint8Array; packet: Packet | undefined }[] = [];

  /**
   * Wraps an accepted socket and starts reading from it. {@linkcode FakeBroker}
   * does this; tests get connections from {@linkcode FakeBroker.accept}.
   */
  constructor(conn: Deno.Conn, id: number, observer: ConnectionObserver) {
    this.#conn = conn;
    this.id = id;
    this.#observer = observer;
    const closing = new Promise<void>((resolve) => this.#signalClosed = resolve);
    const reading = this.#readLoop();
    this.closed = Promise.all([closing, reading]).then(() => this.#writeChain);
  }

  /** Whether the connection has ended (either side). */
  get isClosed(): boolean {
    return this.#isClosed;
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
  ): Promise<Extract<Packet, { cmd: C }>> {
    const what = cmd.toUpperCase();
    const packet = await this.#next(what, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    if (packet.cmd !== cmd) {
      throw new Error(
        `connection ${this.id}: expected ${what} from the client, got ${describePacket(packet)}`,
      );
    }
    return packet as Extract<Packet, { cmd: C }>;
  }

  /**
   * Encodes `packet`, writes it and records it. Writes are
   * sent in call order. On a closed or silenced connection nothing is written
   * or recorded and the promise still resolves (check {@linkcode isClosed}).
   */
  async send(packet: Packet): Promise<void> {
    const bytes = encode(toWire(packet), 4);
    await this.#write(bytes, packet);
  }

  /** Writes raw bytes (e.g. a malformed frame), recorded with `packet` undefined. */
  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.#write(bytes.slice(), undefined);
  }

  /**
   * Expects a CONNECT, answers it with a CONNACK (return code 0 and
   * session-present false unless given) and returns the CONNECT.
   */
  async handshake(options: HandshakeOptions = {}): Promise<IConnectPacket> {
    const connect = await this.expect("connect", options);
    await this.send({
      cmd: "connack",
      returnCode: options.returnCode ?? 0,
      sessionPresent: options.sessionPresent ?? false,
    });
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
    this.#nagle = on;
    if (!on) this.#clientAcknowledged();
  }

  /**
   * Closes the connection right after the `n`-th PUBLISH received on this
   * connection (counting those already received) arrives, without acking it.
   * In scripted mode that PUBLISH is still delivered through {@linkcode next};
   * in broker mode it is not routed. If `n` PUBLISHes have already arrived,
   * closes now.
   */
  dropAfterPublishes(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer: ${n}`);
    this.#dropAfter = n;
    if (this.#publishCount >= n) this.#drainAndClose();
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

  /** Closes the TCP connection. Idempotent. */
  close(): void {
    this.#close("broker");
  }

  #close(by: "client" | "broker"): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closedBy = by;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(this.#closedError(waiter.what));
    }
    this.#signalClosed();
    this.#observer.onClose(this);
  }

  /** Stops reading and writing now, closes once the writes already queued are out. */
  #drainAndClose(): void {
    this.#draining = true;
    this.#writeChain = this.#writeChain.then(() => this.#close("broker"));
  }

  #closedError(what: string): Error {
    const who = this.#closedBy === "client"
      ? "the client closed the connection"
      : "the connection was closed by the broker side";
    return new Error(`connection ${this.id}: ${who} while waiting for ${what}`);
  }

  #next(what: string, timeoutMs: number): Promise<Packet> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#isClosed) return Promise.reject(this.#closedError(what));
    return new Promise((resolve, reject) => {
      const waiter: PacketWaiter = {
        resolve,
        reject,
        what,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          reject(
            new Error(`connection ${this.id}: timed out after ${timeoutMs} ms waiting for ${what}`),
          );
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }

  #write(bytes: Uint8Array, packet: Packet | undefined): Promise<void> {
    if (this.#isClosed || this.#silenced || this.#draining) return Promise.resolve();
    if (this.#nagle && this.#unacknowledged) {
      this.#held.push({ bytes, packet });
      return Promise.resolve();
    }
    if (this.#nagle) this.#unacknowledged = true;
    return this.#writeFrames([{ bytes, packet }]);
  }

  /** Records `frames` and writes them as one socket write, after earlier writes. */
  #writeFrames(frames: { bytes: Uint8Array; packet: Packet | undefined }[]): Promise<void> {
    const write = this.#writeChain.then(async () => {
      if (this.#isClosed || this.#silenced) return;
      const time = performance.now();
      for (const { bytes, packet } of frames) {
        this.#record({ direction: "toClient", connection: this.id, time, bytes, packet });
      }
      const bytes = frames.length === 1 ? frames[0].bytes : concat(frames.map((f) => f.bytes));
      try {
        let offset = 0;
        while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
      } catch {
        this.#close("client");
      }
    });
    this.#writeChain = write.catch(() => {});
    return write;
  }

  /** Data from the client carries its TCP ACK: what Nagle held goes out now, as one segment. */
  #clientAcknowledged(): void {
    this.#unacknowledged = false;
    if (this.#held.length === 0 || this.#isClosed || this.#silenced) return;
    const held = this.#held;
    this.#held = [];
    this.#unacknowledged = this.#nagle;
    this.#writeFrames(held);
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
    if (this.#nagle || this.#held.length > 0) this.#clientAcknowledged();
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
        packet = decodePacket(bytes, 4) as unknown as Packet;
      } catch {
        packet = undefined; // malformed: recorded without a packet, and the connection closed
      }
      this.#record({
        direction: "toBroker",
        connection: this.id,
        time: performance.now(),
        bytes,
        packet,
      });
      if (!packet) {
        this.#close("broker"); // malformed frame
        return;
      }
      if (!this.#silenced) this.#dispatch(packet);
    }
  }

  #dispatch(packet: Packet): void {
    if (packet.cmd === "pingreq" && this.#autoPingresp) {
      this.send({ cmd: "pingresp" });
      return;
    }
    let drop = false;
    if (packet.cmd === "publish") {
      this.#publishCount++;
      drop = this.#dropAfter > 0 && this.#publishCount >= this.#dropAfter;
      if (!drop && packet.qos === 1 && this.#autoPuback) {
        this.send({ cmd: "puback", messageId: packet.messageId });
      }
    }
    if (this.#observer.onPacket) {
      if (!drop) this.#observer.onPacket(this, packet);
    } else {
      const waiter = this.#waiters.shift();
      if (waiter) {
        clearTimeout(waiter.timer);
        waiter.resolve(packet);
      } else {
        this.#queue.push(packet);
      }
    }
    if (drop) this.#drainAndClose();
  }
}

/** A subscription a session holds: filter and granted QoS. */
type Subscriptions = Map<string, number>;

/** One client's session in broker mode. */
interface Session {
  clientId: string;
  persistent: boolean;
  subscriptions: Subscriptions;
  connection?: FakeConnection;
  /** QoS 1 messages sent or to send, not yet acked, by packet id, in send order. */
  inflight: Map<number, IPublishPacket>;
  /** QoS 1 messages that arrived while the persistent client was offline. */
  queued: IPublishPacket[];
  nextId: number;
}

interface Retained {
  topic: string;
  payload: Uint8Array;
  qos: number;
}

/** Per-connection state of the plain broker. */
interface ClientState {
  session?: Session;
  will?: IConnectPacket["will"];
  graceful: boolean;
}

/**
 * Broker mode's engine: serves every connection automatically (sessions,
 * routing, retained messages, wills).
 */
class PlainBroker {
  readonly #sessions = new Map<string, Session>();
  readonly #retained = new Map<string, Retained>();
  readonly #clients = new Map<FakeConnection, ClientState>();
  #anonymous = 0;

  handle(conn: FakeConnection, packet: Packet): void {
    const state = this.#clients.get(conn);
    if (!state) {
      if (packet.cmd !== "connect") {
        conn.close(); // the first packet must be CONNECT (MQTT-3.1.0-1)
        return;
      }
      this.#connect(conn, packet);
      return;
    }
    const session = state.session!;
    switch (packet.cmd) {
      case "publish":
        if (packet.qos > 1) {
          conn.close(); // QoS 2 is not supported by the fake broker
          return;
        }
        this.#publish(packet.topic, toBytes(packet.payload), packet.qos, packet.retain);
        if (packet.qos === 1) conn.send({ cmd: "puback", messageId: packet.messageId });
        return;
      case "puback":
        session.inflight.delete(packet.messageId!);
        return;
      case "subscribe":
        this.#subscribe(conn, session, packet.messageId!, packet.subscriptions);
        return;
      case "unsubscribe":
        for (const filter of packet.unsubscriptions) session.subscriptions.delete(filter);
        conn.send({ cmd: "unsuback", messageId: packet.messageId });
        return;
      case "pingreq":
        conn.send({ cmd: "pingresp" });
        return;
      case "disconnect":
        state.graceful = true;
        conn.close();
        return;
      default:
        conn.close(); // a second CONNECT, or a packet only a broker sends
    }
  }

  closed(conn: FakeConnection): void {
    const state = this.#clients.get(conn);
    this.#clients.delete(conn);
    if (!state?.session) return;
    const session = state.session;
    if (session.connection === conn) {
      session.connection = undefined;
      if (!session.persistent) this.#sessions.delete(session.clientId);
    }
    if (!state.graceful && state.will) {
      const { topic, payload, qos, retain } = state.will;
      this.#publish(topic, toBytes(payload), Math.min(qos ?? 0, 1), retain ?? false);
    }
  }

  #connect(conn: FakeConnection, packet: IConnectPacket): void {
    const clean = packet.clean ?? true;
    if (!clean && !packet.clientId) {
      conn.send({ cmd: "connack", returnCode: 2, sessionPresent: false }); // identifier rejected
      conn.close();
      return;
    }
    const clientId = packet.clientId || `fake-broker-${++this.#anonymous}`;
    let session = this.#sessions.get(clientId);
    const sessionPresent = !clean && session !== undefined;
    if (session?.connection && !session.connection.isClosed) {
      const old = session.connection;
      session.connection = undefined; // keep the session when the old connection goes
      old.close(); // session takeover (MQTT-3.1.4-2)
    }
    if (clean || !session) {
      session = {
        clientId,
        persistent: !clean,
        subscriptions: new Map(),
        inflight: new Map(),
        queued: [],
        nextId: 1,
      };
      this.#sessions.set(clientId, session);
    }
    session.persistent = !clean;
    session.connection = conn;
    this.#clients.set(conn, { session, will: packet.will, graceful: false });
    conn.send({ cmd: "connack", returnCode: 0, sessionPresent });
    for (const message of session.inflight.values()) conn.send({ ...message, dup: true });
    for (const message of session.queued.splice(0)) this.#deliver(session, message);
  }

  #subscribe(
    conn: FakeConnection,
    session: Session,
    messageId: number,
    subscriptions: { topic: string; qos: number }[],
  ): void {
    const granted = subscriptions.map(({ topic, qos }) => {
      if (topic.startsWith("reject/")) return 0x80;
      const grant = Math.min(qos, 1);
      session.subscriptions.set(topic, grant);
      return grant;
    });
    conn.send({ cmd: "suback", messageId, granted });
    for (const [i, { topic: filter }] of subscriptions.entries()) {
      if (granted[i] === 0x80) continue;
      for (const message of this.#retained.values()) {
        if (!matchTopic(filter, message.topic)) continue;
        const qos = Math.min(message.qos, granted[i]);
        this.#deliver(session, this.#message(message.topic, message.payload, qos, true));
      }
    }
  }

  #publish(topic: string, payload: Uint8Array, qos: number, retain: boolean): void {
    if (retain) {
      if (payload.length === 0) this.#retained.delete(topic);
      else this.#retained.set(topic, { topic, payload, qos });
    }
    for (const session of this.#sessions.values()) {
      let best = -1;
      for (const [filter, granted] of session.subscriptions) {
        if (matchTopic(filter, topic)) best = Math.max(best, granted);
      }
      if (best < 0) continue;
      const message = this.#message(topic, payload, Math.min(qos, best), false);
      if (session.connection) this.#deliver(session, message);
      else if (session.persistent && message.qos === 1) session.queued.push(message);
    }
  }

  #message(topic: string, payload: Uint8Array, qos: number, retain: boolean): IPublishPacket {
    return {
      cmd: "publish",
      topic,
      payload: new Uint8Array(payload),
      qos: qos as 0 | 1,
      retain,
      dup: false,
    };
  }

  /** Sends `message` to the session's client, giving QoS 1 messages a packet id. */
  #deliver(session: Session, message: IPublishPacket): void {
    if (!session.connection) {
      if (session.persistent && message.qos === 1) session.queued.push(message);
      return;
    }
    if (message.qos === 1) {
      let id = session.nextId;
      while (session.inflight.has(id)) id = id % 65535 + 1;
      session.nextId = id % 65535 + 1;
      message = { ...message, messageId: id };
      session.inflight.set(id, message);
    }
    session.connection.send(message);
  }
}

function toBytes(payload: string | Uint8Array): Uint8Array {
  return typeof payload === "string" ? new TextEncoder().encode(payload) : new Uint8Array(payload);
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A fake MQTT broker on a local TCP port, scripted by the test or working as
 * a plain broker (see the module documentation). Close it with
 * {@linkcode close}, or `await using`.
 *
 * @example
 * ```ts ignore
 * import { FakeBroker } from "./testing.ts";
 *
 * Deno.test("the client re-sends an un-acked PUBLISH after a drop", async () => {
 *   await using broker = await FakeBroker.start();
 *   // start a client against broker.hostname:broker.port, then:
 *   const first = await broker.accept();
 *   await first.handshake();
 *   first.dropAfterPublishes(1);
 *   const original = await first.expect("publish");
 *   const second = await broker.accept();
 *   await second.handshake({ sessionPresent: true });
 *   const resent = await second.expect("publish");
 *   if (!resent.dup || resent.messageId !== original.messageId) throw new Error("not re-sent");
 *   await broker.waitFor(() => broker.framesOf("publish", "toBroker").length === 2, {
 *     what: "two PUBLISH frames",
 *   });
 * });
 * ```
 */
export class FakeBroker implements AsyncDisposable {
  /** The address the broker listens on. */
  readonly hostname: string;
  /** The port the broker listens on (the free port chosen when started with port 0). */
  readonly port: number;
  /** Every frame on every connection, both directions, in order. */
  readonly frames: FrameRecord[] = [];

  readonly #listener: Deno.TcpListener;
  readonly #engine: PlainBroker | undefined;
  readonly #connections = new Set<FakeConnection>();
  readonly #allConnections: FakeConnection[] = [];
  readonly #acceptQueue: FakeConnection[] = [];
  readonly #acceptWaiters: Waiter<FakeConnection>[] = [];
  readonly #watchers = new Set<() => void>();
  readonly #acceptLoop: Promise<void>;
  #connectionCount = 0;
  #refusedCount = 0;
  #refusing = false;
  #closing: Promise<void> | undefined;

  private constructor(listener: Deno.TcpListener, mode: "scripted" | "broker") {
    this.#listener = listener;
    const addr = listener.addr;
    this.hostname = addr.hostname;
    this.port = addr.port;
    this.#engine = mode === "broker" ? new PlainBroker() : undefined;
    this.#acceptLoop = this.#runAcceptLoop();
  }

  /** Starts listening (on 127.0.0.1 and a free port unless told otherwise). */
  // deno-lint-ignore require-await
  static async start(options: FakeBrokerOptions = {}): Promise<FakeBroker> {
    const mode = options.mode ?? "scripted";
    if (mode !== "scripted" && mode !== "broker") {
      throw new TypeError(`mode must be "scripted" or "broker", got ${mode}`);
    }
    const listener = Deno.listen({ // throws (so start() rejects) if the port is taken
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
      transport: "tcp",
    });
    return new FakeBroker(listener, mode);
  }

  /** How many connections have been accepted so far (refused ones not counted). */
  get connectionCount(): number {
    return this.#connectionCount;
  }

  /** How many connections were closed at once because of {@linkcode refuseConnections}. */
  get refusedCount(): number {
    return this.#refusedCount;
  }

  /** The frames whose packet is a `cmd` (e.g. `"publish"`), optionally in one direction only. */
  framesOf(cmd: Packet["cmd"], direction?: "toBroker" | "toClient"): FrameRecord[] {
    return this.frames.filter((frame) =>
      frame.packet?.cmd === cmd && (direction === undefined || frame.direction === direction)
    );
  }

  /**
   * The next client connection not yet handed out (connections are queued
   * if they arrive before the call). Rejects after `timeoutMs` (default 5000).
   */
  accept(options: TimeoutOptions = {}): Promise<FakeConnection> {
    const queued = this.#acceptQueue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closing) return Promise.reject(new Error("the fake broker is closed"));
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const waiter: Waiter<FakeConnection> = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#acceptWaiters.splice(this.#acceptWaiters.indexOf(waiter), 1);
          reject(
            new Error(
              `no client connected within ${timeoutMs} ms ` +
                `(${this.#connectionCount} connection(s) accepted so far)`,
            ),
          );
        }, timeoutMs),
      };
      this.#acceptWaiters.push(waiter);
    });
  }

  /**
   * While `refuse` is true, every accepted socket is closed at once, as a
   * broker that is down while its port still accepts TCP.
   */
  refuseConnections(refuse: boolean): void {
    this.#refusing = refuse;
  }

  /** Closes every open client connection (both modes). */
  dropAll(): void {
    for (const conn of [...this.#connections]) conn.close();
  }

  /**
   * Resolves once `predicate()` is true. It is checked now and after every
   * frame and connection event; rejects after `timeoutMs` (default 5000)
   * with a message naming `what`.
   */
  waitFor(predicate: () => boolean, options: WaitForOptions = {}): Promise<void> {
    const what = options.what ?? "a condition";
    try {
      if (predicate()) return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#closing) {
      return Promise.reject(new Error(`the fake broker is closed; ${what} never happened`));
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const finish = (error?: unknown) => {
        this.#watchers.delete(check);
        clearTimeout(timer);
        if (error === undefined) resolve();
        else reject(error);
      };
      const check = () => {
        try {
          if (this.#closing) finish(new Error(`the fake broker closed while waiting for ${what}`));
          else if (predicate()) finish();
        } catch (error) {
          finish(error);
        }
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
        timeoutMs,
      );
      this.#watchers.add(check);
    });
  }

  /** Stops listening and closes every connection; resolves when all I/O has stopped. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    await this.#acceptLoop;
    for (const waiter of this.#acceptWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("the fake broker closed while waiting for a connection"));
    }
    this.dropAll();
    await Promise.all(this.#allConnections.map((conn) => conn.closed));
    this.#notify(); // rejects pending waitFor() calls
  }

  async #runAcceptLoop(): Promise<void> {
    while (true) {
      let socket: Deno.TcpConn;
      try {
        socket = await this.#listener.accept();
      } catch {
        return; // the listener was closed
      }
      if (this.#closing || this.#refusing) {
        try {
          socket.close();
        } catch { /* already closed */ }
        if (this.#closing) return;
        this.#refusedCount++;
        this.#notify();
        continue;
      }
      socket.setNoDelay(true);
      this.#addConnection(socket);
    }
  }

  #addConnection(socket: Deno.TcpConn): void {
    const engine = this.#engine;
    const conn = new FakeConnection(socket, ++this.#connectionCount, {
      onFrame: (record) => {
        this.frames.push(record);
        this.#notify();
      },
      onClose: (closed) => {
        this.#connections.delete(closed);
        engine?.closed(closed);
        this.#notify();
      },
      onPacket: engine ? (from, packet) => engine.handle(from, packet) : undefined,
    });
    this.#connections.add(conn);
    this.#allConnections.push(conn);
    const waiter = this.#acceptWaiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(conn);
    } else {
      this.#acceptQueue.push(conn);
    }
    this.#notify();
  }

  #notify(): void {
    for (const check of [...this.#watchers]) check();
  }
}
