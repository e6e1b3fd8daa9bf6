/**
 * `MQTTProto`: MQTT on one connection and nothing else. It frames packets in
 * and out and reports them to its owner; it knows nothing of sessions,
 * retries or reconnection (that is `MQTTClient`'s job).
 *
 * @module
 */

import { concat, errorText } from "./_bytes.ts";
import { PacketDecoder } from "./codec/decode.ts";
import type { Packet, ProtocolVersion } from "./codec/packets.ts";
import { packetFrame } from "./core/_frames.ts";
import { type Clock, realClock } from "./core/clock.ts";
import { ConnectionLostError, ProtocolError } from "./errors.ts";
import type { Connection } from "./transport/connection.ts";

export type { DialOptions, TlsOptions } from "./transport/tcp.ts";
export { dial } from "./transport/tcp.ts";

/** What a connection reports to its owner. */
export interface ProtoEvents {
  /** A packet arrived. */
  onPacket(packet: Packet): void;
  /** The connection ended; called exactly once, with the reason if it was not a plain close. */
  onClose(error?: Error): void;
  /** `bytes` queued earlier were handed to the transport. */
  onFlushed?(bytes: number): void;
}

/** Settings of one connection. */
export interface ProtoOptions {
  /** 4 (3.1.1, default) or 5: how incoming packets are decoded. */
  protocolVersion?: ProtocolVersion;
  /** Largest frame accepted from the broker, in bytes. Default 4 MiB. */
  maxPacketSize?: number;
  /** Writes are reported as backed up above this many queued bytes. Default 256 KiB. */
  highWaterMark?: number;
  /** Where the next-macrotask hook comes from. Default: the real clock. */
  clock?: Clock;
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

const DISCONNECT_TYPE = 14;
const DEFAULT_MAX_PACKET = 4 * 1024 * 1024;
const DEFAULT_HIGH_WATER = 256 * 1024;

/**
 * One MQTT connection over a {@linkcode Connection}: coalesces what is
 * queued before the next macrotask into one transport write (urgent frames:
 * before the next microtask), splits the incoming byte stream into packets
 * (however the reads cut it) and hands each to its owner.
 *
 * @example
 * ```ts ignore
 * import { MQTTProto } from "./proto.ts";
 * import { fromByteConn } from "./transport/tcp.ts";
 * const conn = fromByteConn(await Deno.connect({ hostname: "127.0.0.1", port: 1883 }));
 * const proto = new MQTTProto(conn, {
 *   onPacket: (packet) => console.log(packet.cmd),
 *   onClose: (error) => console.log("closed", error?.message),
 * });
 * proto.send({ cmd: "connect", clientId: "x", protocolVersion: 4, clean: true, keepalive: 60 });
 * ```
 */
export class MQTTProto {
  readonly #conn: Connection;
  readonly #events: ProtoEvents;
  readonly #clock: Clock;
  readonly #version: ProtocolVersion;
  readonly #highWaterMark: number;
  readonly #decoder: PacketDecoder;

  #writeQueue: Uint8Array[] = [];
  #bufferedBytes = 0;
  #urgent = false; // a frame queued since the last write should not wait for the macrotask
  #disconnectQueued = false;
  #microtaskFlushScheduled = false;
  #macrotaskFlushScheduled = false;
  #writing = false;
  #drainWaiters: (() => void)[] = [];
  #flushWaiters: (() => void)[] = [];

  #paused: { promise: Promise<void>; resume: () => void } | undefined;
  #closed = false;
  readonly #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  /** Wraps `conn` and starts reading from it. */
  constructor(conn: Connection, events: ProtoEvents, options: ProtoOptions = {}) {
    this.#conn = conn;
    this.#events = events;
    this.#clock = options.clock ?? realClock;
    this.#version = options.protocolVersion ?? 4;
    this.#highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER;
    this.#decoder = new PacketDecoder({
      protocolVersion: this.#version,
      maxPacketSize: options.maxPacketSize ?? DEFAULT_MAX_PACKET,
    });
    this.#closedPromise = new Promise((resolve) => this.#resolveClosed = resolve);
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

  /** Bytes queued but not yet handed to the transport. */
  get bufferedBytes(): number {
    return this.#bufferedBytes;
  }

  /** Whether writers should wait for {@linkcode drained} before queueing more. */
  get backedUp(): boolean {
    return this.#bufferedBytes > this.#highWaterMark;
  }

  /** Encodes `packet` and queues it for the next coalesced write. */
  send(packet: Packet, options: SendOptions = {}): void {
    this.sendBytes(packetFrame(packet, this.#version), options);
  }

  /**
   * Queues one whole frame for the next coalesced write. Nothing is queued
   * after a DISCONNECT: it must be the last packet the client sends.
   */
  sendBytes(frame: Uint8Array, options: SendOptions = {}): void {
    if (this.#closed || this.#disconnectQueued) return;
    this.#writeQueue.push(frame);
    this.#bufferedBytes += frame.length;
    if (frame[0] >> 4 === DISCONNECT_TYPE) this.#disconnectQueued = true;
    if (options.urgent) this.#urgent = true;
    this.#scheduleFlush();
  }

  /** Queues several whole frames, in order, for the next coalesced write. */
  sendFrames(frames: readonly Uint8Array[], urgent: boolean): void {
    for (let i = 0; i < frames.length; i++) {
      if (this.#closed || this.#disconnectQueued) return;
      const frame = frames[i];
      this.#writeQueue.push(frame);
      this.#bufferedBytes += frame.length;
      if (frame[0] >> 4 === DISCONNECT_TYPE) this.#disconnectQueued = true;
    }
    if (urgent) this.#urgent = true;
    this.#scheduleFlush();
  }

  /** Resolves once queued bytes fall to the high-water mark, or the connection closes. */
  drained(): Promise<void> {
    if (!this.backedUp || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Writes everything queued, then closes: a polite end (DISCONNECT). */
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

  /** Stops reading from the transport (the broker's TCP window then fills up). */
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

  /** Closes the transport; `error` is the reason reported to the owner. Idempotent. */
  close(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.close();
    this.#writeQueue = [];
    this.#bufferedBytes = 0;
    this.#wakeDrainWaiters();
    for (const wake of this.#flushWaiters.splice(0)) wake();
    this.resumeReading();
    try {
      this.#events.onClose(error);
    } finally {
      this.#resolveClosed();
    }
  }

  /**
   * Writes on the next macrotask: a producer that awaits each publish (a
   * microtask per message) gets to queue all it has first, so a window
   * refill or a QoS 0 burst is one transport write. An urgent frame (its
   * sender waits for the answer) goes out on the next microtask instead,
   * with everything queued before it.
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
      this.#clock.defer(this.#flushFromMacrotask);
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
    let written = 0;
    try {
      const chunks = this.#writeQueue;
      this.#writeQueue = [];
      const bytes = chunks.length === 1 ? chunks[0] : concat(chunks);
      await this.#conn.write(bytes);
      written = bytes.length;
      this.#bufferedBytes -= written;
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
    if (written > 0 && !this.#closed) this.#events.onFlushed?.(written);
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
        const chunk = await this.#conn.read();
        if (chunk === null) {
          this.close(new ConnectionLostError("broker closed the connection"));
          return;
        }
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

  #receive(chunk: Uint8Array): void {
    try {
      this.#decoder.push(chunk, this.#deliver);
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError) {
        this.close(
          new ProtocolError(`malformed packet from broker: ${error.message}`, { cause: error }),
        );
      } else {
        throw error;
      }
    }
  }

  readonly #deliver = (packet: Packet): void => {
    if (!this.#closed) this.#events.onPacket(packet);
  };
}
