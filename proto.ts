/**
 * `MQTTProto`: MQTT 3.1.1 on one connection and nothing else. It frames
 * packets in and out and reports them to its owner; it knows nothing of
 * retries, reconnection or sessions (that is `MQTTClient`'s job).
 *
 * @module
 */

import {
  Buffer,
  generate,
  type IConnackPacket,
  type Packet,
  parser,
  setImmediate,
} from "./deps.ts";
import { ConnectionLostError, ProtocolError } from "./errors.ts";
import { frameViolation } from "./frame_check.ts";

/** TLS settings: `true` for the system roots, or explicit certificates. */
export interface TlsOptions {
  /** Extra trusted CA certificates, PEM. Default: the system roots only. */
  caCerts?: string[];
  /** Client certificate for mutual TLS, PEM. */
  cert?: string;
  /** Client private key for mutual TLS, PEM. */
  key?: string;
  /** Name to verify the broker's certificate against. Default: the server name. */
  hostname?: string;
}

/** Where and how to open a connection. */
export interface DialOptions {
  /** Host name or IP. */
  hostname: string;
  /** TCP port. */
  port: number;
  /** TLS settings; absent or false for plain TCP. */
  tls?: TlsOptions | boolean;
  /** Aborts the attempt (closes a half-made connection). */
  signal?: AbortSignal;
}

/**
 * Opens a TCP (or TLS) connection to a broker. The seam the client uses, so
 * tests and users can substitute their own transport.
 */
export async function dial(options: DialOptions): Promise<Deno.Conn> {
  const { hostname, port, signal } = options;
  const tls = options.tls === true ? {} : options.tls || undefined;
  if (tls?.cert && tls.key) return await dialMutualTls(hostname, port, tls, signal);
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname, port, signal });
  } catch (error) {
    throw new ConnectionLostError(
      `cannot connect to ${hostname}:${port}: ${errorText(error)}`,
      { cause: error },
    );
  }
  conn.setNoDelay(true); // small frames go out at once; we coalesce ourselves
  if (!tls) return conn;
  try {
    // startTls lets the verified name differ from the address dialled.
    const tlsConn = await Deno.startTls(conn, {
      hostname: tls.hostname ?? hostname,
      caCerts: tls.caCerts,
    });
    await tlsConn.handshake();
    return tlsConn;
  } catch (error) {
    try {
      conn.close();
    } catch { /* already closed by the failed handshake */ }
    throw new ConnectionLostError(
      `TLS handshake with ${hostname}:${port} failed: ${errorText(error)}`,
      { cause: error },
    );
  }
}

/**
 * Deno sends a client certificate only through `Deno.connectTls`, which
 * verifies the broker against the address it dials: `tls.hostname` must then
 * be absent or equal to the server (checked when the client is created).
 */
async function dialMutualTls(
  hostname: string,
  port: number,
  tls: TlsOptions,
  signal: AbortSignal | undefined,
): Promise<Deno.Conn> {
  signal?.throwIfAborted();
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.connectTls({
      hostname,
      port,
      caCerts: tls.caCerts,
      cert: tls.cert!,
      key: tls.key!,
    });
  } catch (error) {
    throw new ConnectionLostError(
      `cannot connect to ${hostname}:${port} over TLS: ${errorText(error)}`,
      { cause: error },
    );
  }
  const onAbort = () => conn.close();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await conn.handshake();
    return conn;
  } catch (error) {
    try {
      conn.close();
    } catch { /* already closed */ }
    throw new ConnectionLostError(
      `TLS handshake with ${hostname}:${port} failed: ${errorText(error)}`,
      { cause: error },
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** What a connection reports to its owner. */
export interface ProtoEvents {
  /** A packet arrived (after the CONNACK that {@linkcode MQTTProto.handshake} consumed). */
  onPacket(packet: Packet): void;
  /** The connection ended; called exactly once, with the reason if it was not a plain close. */
  onClose(error?: Error): void;
}

/** Settings of one connection. */
export interface ProtoOptions {
  /** Largest frame accepted from the broker, in bytes. Default 4 MiB. */
  maxPacketSize?: number;
  /** Writes are reported as backed up above this many buffered bytes. Default 256 KiB. */
  highWaterMark?: number;
}

/** How soon a queued frame must be written. */
export interface SendOptions {
  /**
   * The sender waits for the answer (CONNECT, PINGREQ, SUBSCRIBE, a sync
   * publish): write on the next microtask rather than the next macrotask.
   * Default false.
   */
  urgent?: boolean;
}

const READ_SIZE = 64 * 1024;
const PUBACK_HEADER = 0x40;
const DEFAULT_MAX_PACKET = 4 * 1024 * 1024;
const DEFAULT_HIGH_WATER = 256 * 1024;

/**
 * One MQTT connection over a `Deno.Conn`: encodes packets with mqtt-packet,
 * coalesces what is queued before the next macrotask into one socket write
 * (urgent frames: before the next microtask), splits the incoming byte
 * stream into frames (however the reads cut it) and hands each parsed packet
 * to its owner.
 *
 * @example
 * ```ts ignore
 * import { dial, MQTTProto } from "./proto.ts";
 * const conn = await dial({ hostname: "127.0.0.1", port: 1883 });
 * const proto = new MQTTProto(conn, {
 *   onPacket: (packet) => console.log(packet.cmd),
 *   onClose: (error) => console.log("closed", error?.message),
 * });
 * proto.send({ cmd: "connect", clientId: "x", protocolVersion: 4, clean: true, keepalive: 60 });
 * const connack = await proto.handshake();
 * ```
 */
export class MQTTProto {
  readonly #conn: Deno.Conn;
  readonly #events: ProtoEvents;
  readonly #maxPacketSize: number;
  readonly #highWaterMark: number;
  readonly #parser = parser({ protocolVersion: 4 });

  #writeQueue: Uint8Array[] = [];
  #bufferedBytes = 0;
  #urgent = false; // a frame queued since the last write should not wait for the macrotask
  #disconnectQueued = false;
  #microtaskFlushScheduled = false;
  #macrotaskFlushScheduled = false;
  #writing = false;
  #drainWaiters: (() => void)[] = [];
  #flushWaiters: (() => void)[] = [];

  readonly #readBuffer = new Uint8Array(READ_SIZE);
  #pending: Uint8Array | undefined; // bytes of an incomplete frame
  #paused: { promise: Promise<void>; resume: () => void } | undefined;
  #handshake: { resolve: (p: IConnackPacket) => void; reject: (e: Error) => void } | undefined;
  #handshakeDone = false;
  #closed = false;
  #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  /** Wraps `conn` and starts reading from it. */
  constructor(conn: Deno.Conn, events: ProtoEvents, options: ProtoOptions = {}) {
    this.#conn = conn;
    this.#events = events;
    this.#maxPacketSize = options.maxPacketSize ?? DEFAULT_MAX_PACKET;
    this.#highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER;
    this.#closedPromise = new Promise((resolve) => this.#resolveClosed = resolve);
    this.#parser.on("packet", (packet: Packet) => this.#deliver(packet));
    this.#parser.on("error", (error: Error) => {
      this.close(new ProtocolError(`malformed packet from broker: ${error.message}`));
    });
    this.#readLoop();
  }

  /** Resolves when the connection has ended. Never rejects. */
  get closed(): Promise<void> {
    return this.#closedPromise;
  }

  /** Whether the connection has ended. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Bytes queued but not yet written to the socket. */
  get bufferedBytes(): number {
    return this.#bufferedBytes;
  }

  /** Whether writers should wait for {@linkcode drained} before queueing more. */
  get backedUp(): boolean {
    return this.#bufferedBytes > this.#highWaterMark;
  }

  /**
   * Resolves with the CONNACK, the first packet the broker must send.
   * Rejects if the connection closes first or another packet comes first.
   * The caller writes the CONNECT with {@linkcode send} and owns the timeout.
   */
  handshake(): Promise<IConnackPacket> {
    if (this.#handshakeDone || this.#handshake) {
      return Promise.reject(new Error("handshake() may be called once per connection"));
    }
    if (this.#closed) return Promise.reject(new ConnectionLostError("connection is closed"));
    return new Promise((resolve, reject) => this.#handshake = { resolve, reject });
  }

  /**
   * Encodes `packet` and queues it for the next coalesced write. Nothing is
   * queued after a DISCONNECT: it must be the last packet the client sends.
   */
  send(packet: Packet, options: SendOptions = {}): void {
    this.sendBytes(generate(packet), options);
    if (packet.cmd === "disconnect") this.#disconnectQueued = true;
  }

  /** Queues raw frame bytes for the next coalesced write (none after a DISCONNECT). */
  sendBytes(bytes: Uint8Array, options: SendOptions = {}): void {
    if (this.#closed || this.#disconnectQueued) return;
    this.#writeQueue.push(bytes);
    this.#bufferedBytes += bytes.length;
    if (options.urgent) this.#urgent = true;
    this.#scheduleFlush();
  }

  /** Resolves once queued bytes fall to the high-water mark, or the connection closes. */
  drained(): Promise<void> {
    if (!this.backedUp || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /**
   * Writes everything queued, then closes. For a polite end (DISCONNECT) or
   * the clean-session dance.
   */
  async end(): Promise<void> {
    while ((this.#writeQueue.length > 0 || this.#writing) && !this.#closed) {
      await new Promise<void>((resolve) => {
        this.#flushWaiters.push(resolve);
        this.#urgent = true;
        this.#scheduleFlush();
      });
    }
    this.close();
  }

  /** Stops reading from the socket (the broker's TCP window then fills up). */
  pauseReading(): void {
    if (this.#paused) return;
    let resume!: () => void;
    const promise = new Promise<void>((resolve) => resume = resolve);
    this.#paused = { promise, resume };
  }

  /** Resumes reading after {@linkcode pauseReading}. */
  resumeReading(): void {
    const paused = this.#paused;
    this.#paused = undefined;
    paused?.resume();
  }

  /** Closes the socket; `error` is the reason reported to the owner. Idempotent. */
  close(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#writeQueue = [];
    this.#bufferedBytes = 0;
    this.#wakeDrainWaiters();
    for (const wake of this.#flushWaiters.splice(0)) wake();
    this.resumeReading();
    if (this.#handshake) {
      this.#handshake.reject(error ?? new ConnectionLostError("connection closed before CONNACK"));
      this.#handshake = undefined;
    }
    try {
      this.#events.onClose(error);
    } finally {
      this.#resolveClosed();
    }
  }

  /**
   * Writes on the next macrotask: a producer that awaits each publish (a
   * microtask per message) gets to queue all it has first, so a window refill
   * or a QoS 0 burst is one socket write instead of one or two frames per
   * write. An urgent frame (its sender waits for the answer) goes out on the
   * next microtask instead, with everything queued before it.
   */
  #scheduleFlush(): void {
    if (this.#writing) return; // the write under way reschedules when it is done
    if (this.#urgent) {
      if (this.#microtaskFlushScheduled) return;
      this.#microtaskFlushScheduled = true;
      queueMicrotask(this.#flushFromMicrotask);
    } else {
      if (this.#macrotaskFlushScheduled) return;
      this.#macrotaskFlushScheduled = true;
      setImmediate(this.#flushFromMacrotask);
    }
  }

  readonly #flushFromMicrotask = (): void => {
    this.#microtaskFlushScheduled = false;
    this.#flush();
  };

  readonly #flushFromMacrotask = (): void => {
    this.#macrotaskFlushScheduled = false;
    this.#flush();
  };

  async #flush(): Promise<void> {
    if (this.#writing || this.#closed || this.#writeQueue.length === 0) return;
    this.#writing = true;
    this.#urgent = false;
    try {
      const chunks = this.#writeQueue;
      this.#writeQueue = [];
      const bytes = chunks.length === 1 ? chunks[0] : concat(chunks);
      let offset = 0;
      while (offset < bytes.length) {
        offset += await this.#conn.write(offset === 0 ? bytes : bytes.subarray(offset));
      }
      this.#bufferedBytes -= bytes.length;
      if (!this.backedUp) this.#wakeDrainWaiters();
    } catch (error) {
      if (!this.#closed) {
        this.close(new ConnectionLostError(`write failed: ${errorText(error)}`, { cause: error }));
      }
    } finally {
      this.#writing = false;
      if (this.#writeQueue.length > 0 && !this.#closed) this.#scheduleFlush();
      const waiters = this.#flushWaiters;
      this.#flushWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  #wakeDrainWaiters(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once reading is not paused (at once if it is not). */
  async #unpaused(): Promise<void> {
    while (this.#paused) await this.#paused.promise;
  }

  async #readLoop(): Promise<void> {
    try {
      while (!this.#closed) {
        await this.#unpaused();
        if (this.#closed) return;
        const n = await this.#conn.read(this.#readBuffer);
        if (n === null) {
          this.close(new ConnectionLostError("broker closed the connection"));
          return;
        }
        // A copy of just what arrived: parsed payloads keep referring to it.
        const chunk = this.#readBuffer.slice(0, n);
        // pauseReading() may have come while this read was pending: hold the bytes.
        await this.#unpaused();
        if (this.#closed) return;
        this.#receive(chunk);
      }
    } catch (error) {
      if (!this.#closed) {
        this.close(new ConnectionLostError(`read failed: ${errorText(error)}`, { cause: error }));
      }
    }
  }

  /** Splits `chunk` (plus any leftover) into whole frames and parses each. */
  #receive(chunk: Uint8Array): void {
    let bytes = chunk;
    if (this.#pending) {
      bytes = concat([this.#pending, chunk]);
      this.#pending = undefined;
    }
    let offset = 0;
    while (offset < bytes.length && !this.#closed) {
      const frameLength = this.#frameLength(bytes, offset);
      if (frameLength === undefined) break; // header incomplete
      if (frameLength < 0) return; // protocol error, connection closed
      if (offset + frameLength > bytes.length) break; // body incomplete
      if (frameLength === 4 && bytes[offset] === PUBACK_HEADER && bytes[offset + 1] === 2) {
        // The hot path of a QoS 1 stream: one PUBACK per message, decoded here
        // rather than through the general parser.
        const messageId = (bytes[offset + 2] << 8) | bytes[offset + 3];
        offset += 4;
        if (messageId === 0) {
          this.close(new ProtocolError("malformed packet from broker: packet id 0 in a PUBACK"));
          return;
        }
        this.#deliver({ cmd: "puback", messageId });
        continue;
      }
      const frame = bytes.subarray(offset, offset + frameLength);
      offset += frameLength;
      const violation = frameViolation(frame);
      if (violation) {
        this.close(new ProtocolError(`malformed packet from broker: ${violation}`));
        return;
      }
      this.#parser.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
    }
    if (offset < bytes.length && !this.#closed) this.#pending = bytes.slice(offset);
  }

  /**
   * Total length of the frame starting at `offset`, undefined if its header is
   * not complete yet, or -1 after closing the connection for a bad header.
   */
  #frameLength(bytes: Uint8Array, offset: number): number | undefined {
    let remaining = 0;
    let multiplier = 1;
    for (let i = 1; i <= 4; i++) {
      if (offset + i >= bytes.length) return undefined;
      const digit = bytes[offset + i];
      remaining += (digit & 0x7f) * multiplier;
      if ((digit & 0x80) === 0) {
        const total = 1 + i + remaining;
        if (total > this.#maxPacketSize) {
          this.close(
            new ProtocolError(
              `broker sent a ${total}-byte packet, over maxPacketSize ${this.#maxPacketSize}`,
            ),
          );
          return -1;
        }
        return total;
      }
      multiplier *= 128;
    }
    this.close(new ProtocolError("malformed remaining length from broker (more than 4 bytes)"));
    return -1;
  }

  #deliver(packet: Packet): void {
    if (this.#closed) return;
    if (!this.#handshakeDone) {
      this.#handshakeDone = true;
      if (packet.cmd !== "connack") {
        // close() rejects a pending handshake() with this error.
        this.close(new ProtocolError(`expected CONNACK from broker, got ${packet.cmd}`));
        return;
      }
      const waiter = this.#handshake;
      this.#handshake = undefined;
      waiter?.resolve(packet);
      return;
    }
    this.#events.onPacket(packet);
  }
}

/** A Node Buffer view of `bytes` (no copy): mqtt-packet's encoder needs Buffers. */
export function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function concat(chunks: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
