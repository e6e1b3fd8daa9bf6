/**
 * `MQTTClient`: connection supervision, keepalive, reconnection,
 * retransmission, the in-flight window, the clean-session dance and message
 * dispatch. Protocol decisions live in {@linkcode MqttState}; this module does
 * the I/O and the loops around it.
 *
 * @module
 */

import { Backoff } from "./backoff.ts";
import type { IConnectPacket, IPublishPacket, Packet } from "./deps.ts";
import {
  ClientClosedError,
  ConnectionLostError,
  ConnectionRefusedError,
  ProtocolError,
  ResponseTimeoutError,
  SubscriptionRefusedError,
} from "./errors.ts";
import {
  boolean,
  type MQTTClientOptions,
  resolveSettings,
  type Settings,
  toBytes,
} from "./options.ts";
import { bufferView, dial, MQTTProto } from "./proto.ts";
import { encodePublish } from "./publish_codec.ts";
import { type InflightPublish, MqttState, type PendingRequest } from "./state.ts";
import { type Message, MessageIterator, type Sink } from "./messages.ts";
import {
  matchTopic,
  MAX_STRING_BYTES,
  show,
  validateTopicFilter,
  validateTopicName,
} from "./topic.ts";

/** Options of {@linkcode MQTTClient.publish}. */
export interface PublishOptions {
  /** 0 (at most once) or 1 (at least once). Default 0. */
  qos?: 0 | 1;
  /** Retain flag. Default false. */
  retain?: boolean;
  /**
   * QoS 1 only. `true` (default): resolve when the broker's PUBACK arrives.
   * `false`: resolve once the PUBLISH is handed to the socket and the
   * in-flight window has room, so the next message overlaps the wait.
   */
  sync?: boolean;
  /** Withdraws the publish while it still waits for the connection or the window. */
  signal?: AbortSignal;
}

/** Options of calls that accept only cancellation. */
export interface SignalOptions {
  /** Aborting rejects the call with the signal's reason. */
  signal?: AbortSignal;
}

/** A call waiting for the connection (and, for QoS 1, the window). */
interface QueuedSend {
  kind: "publish" | "subscribe" | "unsubscribe";
  topic: string; // topic, or filter
  payload: Uint8Array;
  qos: 0 | 1;
  retain: boolean;
  sync: boolean;
  resolve: (value: number) => void;
  reject: (error: Error) => void;
  signal?: AbortSignal;
}

interface IncomingMessage {
  message: Message;
  id: number | undefined; // packet id of a QoS 1 message
  proto: MQTTProto; // the connection it came on: its PUBACK goes there or nowhere
}

const INCOMING_PAUSE = 64; // queued incoming messages before the socket stops being read
const INCOMING_RESUME = 16;

const MAX_REMAINING_LENGTH = 268_435_455;
const now = () => performance.now();
/** For frames whose sender waits for the answer: written on the next microtask. */
const URGENT = { urgent: true } as const;
/** For frames that may wait for the next macrotask, to share a write. */
const BATCHED = { urgent: false } as const;
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/**
 * An MQTT 3.1.1 client that loses no QoS 1 message: un-ACKed publishes are
 * re-sent on the next connection with their original packet id and DUP, in
 * order; the connection heals itself.
 *
 * @example
 * ```ts ignore
 * import { MQTTClient } from "./mod.ts";
 * const client = new MQTTClient({
 *   server: "127.0.0.1",
 *   onMessage: (topic, payload) => console.log(topic, new TextDecoder().decode(payload)),
 *   onConnect: async (client) => {
 *     await client.subscribe("cmd/#", 1);
 *   },
 * });
 * await client.connect();
 * await client.publish("status/sensor-7", "online", { qos: 1, retain: true });
 * await client.disconnect();
 * ```
 */
export class MQTTClient implements AsyncDisposable {
  readonly #settings: Settings;
  readonly #state: MqttState;
  readonly #backoff: Backoff;

  #proto: MQTTProto | undefined; // the live connection, once CONNACK 0 arrived
  #connecting: MQTTProto | undefined; // a connection still in its handshake
  #dialAbort: AbortController | undefined; // the connection attempt under way
  readonly #lifetime = new AbortController(); // aborted by disconnect()
  #everConnected = false; // the clean-session dance happens before the first success only
  #started = false;
  #closed = false; // disconnect() was called
  #stopped = false; // ... and has shut everything down
  #supervisor: Promise<void> | undefined;
  #linkDown: (() => void) | undefined; // wakes the supervisor when the link drops
  #wake: (() => void) | undefined; // cuts a back-off sleep short
  #netCameUp = false; // the network said "up again": try TCP before any bounce
  #unlistenNet: (() => void) | undefined;

  // Calls waiting for the link (publishes also for the window), each FIFO. Requests
  // have their own queue so a subscribe never waits behind a full publish window.
  #publishQueue: QueuedSend[] = [];
  #requestQueue: QueuedSend[] = [];
  #pumpScheduledForDrain = false;
  #roomWaiters: (() => void)[] = [];
  #nudgeCheckScheduled = false;
  #idleWaiters: (() => void)[] = []; // disconnect() waiting for the last PUBACK

  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;

  readonly #sinks = new Set<Sink>();
  #incoming: IncomingMessage[] = [];
  #dispatching = false;

  /**
   * Creates a client; nothing happens on the network until
   * {@linkcode connect} or {@linkcode start}. Throws TypeError or RangeError
   * for a bad option, naming it.
   */
  constructor(options: MQTTClientOptions) {
    this.#settings = resolveSettings(options);
    const s = this.#settings;
    this.#state = new MqttState({
      keepaliveMs: s.keepaliveMs,
      responseTimeMs: s.responseTimeMs,
      maxInflight: s.maxInflight,
    });
    this.#backoff = new Backoff({ initialDelayMs: s.initialDelayMs, maxDelayMs: s.maxDelayMs });
    if (s.onMessage) {
      const handler = s.onMessage;
      this.#sinks.add({
        filter: undefined,
        deliver: (m) => handler(m.topic, m.payload, m.retained, m.qos, m.dup),
      });
    }
  }

  /** The client id in use (generated when none was configured). */
  get clientId(): string {
    return this.#settings.clientId;
  }

  /** Whether a session is established on a live connection right now. */
  isConnected(): boolean {
    return this.#proto !== undefined;
  }

  /** How many QoS 1 publishes wait for their PUBACK. */
  get inflightCount(): number {
    return this.#state.inflight.size;
  }

  /**
   * Connects once; resolves after CONNACK 0 (and after `onConnect` has run),
   * rejects with a {@linkcode ConnectionRefusedError} naming the reason
   * (e.g. "not authorized") or a ConnectionLostError/ResponseTimeoutError.
   * After success the client keeps the connection up by itself until
   * {@linkcode disconnect}.
   *
   * @example
   * ```ts ignore
   * import { MQTTClient } from "./mod.ts";
   * const client = new MQTTClient({ server: "127.0.0.1" });
   * await client.connect({ signal: AbortSignal.timeout(5000) });
   * ```
   */
  async connect(options: SignalOptions = {}): Promise<void> {
    this.#assertOpen();
    if (this.#started) throw new Error("connect() or start() was already called on this client");
    this.#started = true;
    const { signal } = options;
    const onAbort = () => this.#abortConnecting(signal!.reason);
    signal?.throwIfAborted();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.#settings.net.ensureUp({ bounce: false, signal });
      const sessionPresent = await this.#establish();
      this.#startSupervisor();
      await this.#runOnConnect(sessionPresent);
    } catch (error) {
      this.#started = false;
      if (signal?.aborted) throw signal.reason;
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Connects in the background and keeps reconnecting until
   * {@linkcode disconnect}; never throws. Calls made meanwhile wait for the
   * connection.
   */
  start(): void {
    this.#assertOpen();
    if (this.#started) throw new Error("connect() or start() was already called on this client");
    this.#started = true;
    this.#startSupervisor();
  }

  /**
   * Publishes a message. QoS 0 resolves once written; QoS 1 with `sync: true`
   * (default) resolves on the PUBACK; QoS 1 with `sync: false` streams. While
   * disconnected the call waits for the connection; it never fails because of
   * a reconnect. Bad arguments reject with TypeError/RangeError before
   * anything is sent.
   *
   * @example
   * ```ts ignore
   * // Stream N messages; when the last call resolves, the broker has all N, in order.
   * for (let i = 0; i < 999; i++) await client.publish("log", `line ${i}`, { qos: 1, sync: false });
   * await client.publish("log", "line 999", { qos: 1, sync: true });
   * ```
   */
  publish(
    topic: string,
    payload: string | Uint8Array,
    options: PublishOptions = {},
  ): Promise<void> {
    let item: QueuedSend;
    try {
      item = this.#publishItem(topic, payload, options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#submit(item) as Promise<unknown> as Promise<void>;
  }

  /**
   * Subscribes to a topic filter (`+` and `#` allowed) at QoS 0 or 1.
   * Resolves with the QoS the broker granted; rejects with
   * {@linkcode SubscriptionRefusedError} when the broker answers 0x80. A
   * subscribe that got no answer before a connection dropped is re-sent on
   * the next one.
   */
  subscribe(filter: string, qos: 0 | 1 = 0, options: SignalOptions = {}): Promise<number> {
    try {
      validateTopicFilter(filter);
      checkQos(qos);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#submit(this.#requestItem("subscribe", filter, qos, options.signal));
  }

  /** Unsubscribes from a topic filter; resolves on the UNSUBACK. */
  async unsubscribe(filter: string, options: SignalOptions = {}): Promise<void> {
    validateTopicFilter(filter);
    await this.#submit(this.#requestItem("unsubscribe", filter, 0, options.signal));
  }

  /**
   * Disconnects for good: waits up to `responseTime` for outstanding PUBACKs,
   * sends DISCONNECT (so the broker does not publish the will), closes, and
   * rejects every call still pending with {@linkcode ClientClosedError}.
   * Leaves no timer running. Calling it again does nothing.
   */
  async disconnect(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const reason = new ClientClosedError("client is disconnecting");
    this.#lifetime.abort(reason);
    this.#abortConnecting(reason);
    const proto = this.#proto;
    if (proto && this.#state.inflight.size > 0) await this.#waitIdle(proto);
    if (proto && !proto.isClosed) {
      proto.send({ cmd: "disconnect" }, URGENT);
      // A broker that stopped reading must not make disconnect() hang.
      await this.#bounded(proto.end(), this.#settings.responseTimeMs);
    }
    this.#shutDown();
    await this.#supervisor;
  }

  /** `await using client = new MQTTClient(...)` ends with {@linkcode disconnect}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.disconnect();
  }

  /**
   * Registers `handler` for messages whose topic matches `filter` (MQTT
   * wildcards). Returns a function that removes it. A handler that throws is
   * logged; the others still run. For QoS 1 the PUBACK waits for all handlers.
   *
   * @example
   * ```ts ignore
   * const off = client.on("sensors/+/temp", (m) => console.log(m.topic, m.payload));
   * off();
   * ```
   */
  on(filter: string, handler: (message: Message) => unknown): () => void {
    validateTopicFilter(filter);
    if (typeof handler !== "function") {
      throw new TypeError(`handler must be a function, got ${show(handler)}`);
    }
    const sink: Sink = { filter, deliver: handler };
    this.#sinks.add(sink);
    return () => this.#sinks.delete(sink);
  }

  /**
   * Incoming messages as an async iterator, optionally only those matching
   * `filter`. A QoS 1 message is acknowledged only after the loop pulled it;
   * a slow loop makes the client stop reading the socket once a small buffer
   * is full. Ending the loop (break, return, abort) unregisters it.
   *
   * @example
   * ```ts ignore
   * for await (const m of client.messages("sensors/#")) {
   *   console.log(m.topic, new TextDecoder().decode(m.payload));
   * }
   * ```
   */
  messages(
    filter?: string,
    options: SignalOptions = {},
  ): AsyncIterableIterator<Message> {
    if (filter !== undefined) validateTopicFilter(filter);
    return new MessageIterator(this.#sinks, filter, options.signal);
  }

  // ---- calls and the send queue ---------------------------------------------

  #publishItem(topic: string, payload: string | Uint8Array, options: PublishOptions): QueuedSend {
    validateTopicName(topic);
    if (options === null || typeof options !== "object") {
      throw new TypeError(`publish options must be an object, got ${show(options)}`);
    }
    const qos = options.qos ?? 0;
    checkQos(qos);
    const retain = options.retain ?? false;
    boolean("retain", retain);
    const sync = options.sync ?? true;
    boolean("sync", sync);
    const bytes = toBytes(payload, "payload");
    if (bytes.length > MAX_REMAINING_LENGTH - MAX_STRING_BYTES - 4) {
      const frame = bytes.length + encoder.encode(topic).length + 2 + (qos === 1 ? 2 : 0);
      if (frame > MAX_REMAINING_LENGTH) {
        throw new RangeError(
          `payload of ${bytes.length} bytes makes the PUBLISH exceed MQTT's ${MAX_REMAINING_LENGTH}-byte limit`,
        );
      }
    }
    return {
      kind: "publish",
      topic,
      payload: bytes,
      qos,
      retain,
      sync,
      resolve: noop,
      reject: noop,
      signal: options.signal,
    };
  }

  #requestItem(
    kind: "subscribe" | "unsubscribe",
    filter: string,
    qos: 0 | 1,
    signal: AbortSignal | undefined,
  ): QueuedSend {
    return {
      kind,
      topic: filter,
      payload: EMPTY,
      qos,
      retain: false,
      sync: true,
      resolve: noop,
      reject: noop,
      signal,
    };
  }

  /** Sends `item` now if nothing is ahead of it and there is room; else queues it. */
  #submit(item: QueuedSend): Promise<number> {
    if (this.#closed) return Promise.reject(new ClientClosedError("client is disconnected"));
    if (item.signal?.aborted) return Promise.reject(item.signal.reason);
    return new Promise<number>((resolve, reject) => {
      const signal = item.signal;
      if (signal) {
        // Still queued: withdrawn, never sent. Already written: not taken back, but
        // the caller stops waiting.
        const onAbort = () => {
          const queue = this.#queueOf(item);
          const index = queue.indexOf(item);
          if (index >= 0) queue.splice(index, 1);
          reject(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        item.resolve = (value) => {
          signal.removeEventListener("abort", onAbort);
          resolve(value);
        };
        item.reject = (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        };
      } else {
        item.resolve = resolve;
        item.reject = reject;
      }
      const queue = this.#queueOf(item);
      if (queue.length === 0 && this.#canWrite(item)) {
        this.#write(item);
      } else {
        queue.push(item);
        // Queued behind a backed-up socket: nothing else may come to wake it
        // (QoS 0 gets no PUBACK), so register for the drain now.
        this.#pumpQueue(queue);
      }
    });
  }

  #queueOf(item: QueuedSend): QueuedSend[] {
    return item.kind === "publish" ? this.#publishQueue : this.#requestQueue;
  }

  #canWrite(item: QueuedSend): boolean {
    const proto = this.#proto;
    if (!proto || proto.backedUp || this.#closed) return false;
    if (item.kind === "publish") return item.qos === 0 || this.#state.hasWindowRoom();
    return this.#state.hasFreeId();
  }

  /** Writes queued calls in order while the link is up and there is room. */
  #pump(): void {
    this.#pumpQueue(this.#requestQueue);
    this.#pumpQueue(this.#publishQueue);
  }

  #pumpQueue(queue: QueuedSend[]): void {
    while (queue.length > 0) {
      const item = queue[0];
      if (!this.#canWrite(item)) {
        const proto = this.#proto;
        if (proto?.backedUp && !this.#pumpScheduledForDrain) {
          this.#pumpScheduledForDrain = true;
          proto.drained().then(() => {
            this.#pumpScheduledForDrain = false;
            this.#pump();
          });
        }
        return;
      }
      queue.shift();
      this.#write(item);
    }
  }

  /** Writes one call on the live connection; `#canWrite(item)` holds. */
  #write(item: QueuedSend): void {
    const proto = this.#proto!;
    const state = this.#state;
    const t = now();
    if (item.kind === "publish" && item.qos === 0) {
      proto.sendBytes(encodePublish(item.topic, item.payload, 0, 0, item.retain, false));
      state.packetSent(t); // only moves deadlines later: the timer stays right
      item.resolve(0);
      return;
    }
    const id = state.nextPacketId();
    if (item.kind === "publish") {
      const entry: InflightPublish = {
        id,
        topic: item.topic,
        payload: item.payload,
        retain: item.retain,
        sentAt: t,
        dup: false,
      };
      if (item.sync) entry.settle = (error) => error ? item.reject(error) : item.resolve(0);
      // A sync caller waits for this PUBACK: no macrotask's delay. A stream's
      // publishes wait for the macrotask, to share one write.
      const frame = encodePublish(entry.topic, entry.payload, 1, id, entry.retain, false);
      proto.sendBytes(frame, item.sync ? URGENT : BATCHED);
      state.publishSent(entry, t);
      // Its PUBACK deadline is the only new one; recompute only if it comes first.
      if (t + this.#settings.responseTimeMs < this.#timerAt) this.#armTimer();
      if (!item.sync) {
        if (state.hasWindowRoom()) item.resolve(0);
        else this.#roomWaiters.push(() => item.resolve(0));
      }
      return;
    }
    const request: PendingRequest = {
      id,
      kind: item.kind,
      filters: [item.topic],
      qos: item.qos,
      sentAt: t,
      settle: (result) => {
        if (result instanceof Error) return item.reject(result);
        if (item.kind === "subscribe" && result[0] === 0x80) {
          return item.reject(new SubscriptionRefusedError(item.topic));
        }
        item.resolve(result[0] ?? 0);
      },
    };
    proto.send(requestPacket(request), URGENT);
    state.requestSent(request, t);
    this.#armTimer();
  }

  // ---- connections -------------------------------------------------------------

  /**
   * Opens a session: the clean-session dance on the very first connection
   * with `clean: true`, CleanSession=0 otherwise. Returns sessionPresent.
   */
  async #establish(): Promise<boolean> {
    const s = this.#settings;
    if (!this.#everConnected && s.clean) {
      const { proto } = await this.#handshake(true);
      s.logger.debug("clean session started; reconnecting with CleanSession=0 to keep it");
      proto.send({ cmd: "disconnect" }, URGENT);
      await proto.end();
    }
    const { proto, sessionPresent } = await this.#handshake(false);
    this.#everConnected = true;
    this.#linkUp(proto, sessionPresent);
    return sessionPresent;
  }

  /** One connection attempt up to CONNACK 0; the proto is left open on success. */
  async #handshake(cleanSession: boolean): Promise<{ proto: MQTTProto; sessionPresent: boolean }> {
    const s = this.#settings;
    this.#assertOpen();
    s.logger.info(
      `connecting to ${s.server}:${s.port} as ${s.clientId} (CleanSession=${cleanSession ? 1 : 0})`,
    );
    const abort = new AbortController();
    this.#dialAbort = abort;
    let conn: Deno.Conn;
    try {
      conn = await (s.dial ?? dial)({
        hostname: s.server,
        port: s.port,
        tls: s.tls,
        signal: abort.signal,
      });
    } finally {
      this.#dialAbort = undefined;
    }
    if (this.#closed) {
      conn.close();
      throw new ClientClosedError("client was disconnected while connecting");
    }
    const proto: MQTTProto = new MQTTProto(conn, {
      onPacket: (packet) => this.#onPacket(proto, packet),
      onClose: (error) => this.#onClose(proto, error),
    }, { maxPacketSize: s.maxPacketSize });
    this.#connecting = proto;
    try {
      proto.send(this.#connectPacket(cleanSession), URGENT);
      this.#state.connectStarted(now());
      this.#armTimer();
      const connack = await proto.handshake();
      if (connack.returnCode !== 0) {
        proto.close();
        throw new ConnectionRefusedError(connack.returnCode ?? -1);
      }
      return { proto, sessionPresent: connack.sessionPresent };
    } catch (error) {
      proto.close();
      this.#state.linkLost();
      this.#disarmIfIdle(); // a caught refusal must not keep the process alive
      throw error;
    } finally {
      this.#connecting = undefined;
    }
  }

  #connectPacket(cleanSession: boolean): IConnectPacket {
    const s = this.#settings;
    const packet: IConnectPacket = {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clientId: s.clientId,
      clean: cleanSession,
      keepalive: s.keepalive,
    };
    if (s.user !== undefined) packet.username = s.user;
    if (s.password !== undefined) packet.password = bufferView(encoder.encode(s.password));
    if (s.will) packet.will = { ...s.will, payload: bufferView(s.will.payload) };
    return packet;
  }

  /** CONNACK 0 arrived: re-send what is outstanding, then let new calls through. */
  #linkUp(proto: MQTTProto, sessionPresent: boolean): void {
    const s = this.#settings;
    if (proto.isClosed) {
      // Closed by a bad frame that shared a read with the CONNACK: its onClose
      // came while it was not the live link yet, so this attempt simply failed.
      this.#state.linkLost();
      throw new ConnectionLostError("connection closed right after CONNACK");
    }
    const plan = this.#state.sessionStarted(now());
    this.#proto = proto;
    this.#backoff.reset();
    s.logger.info(
      `connected to ${s.server}:${s.port} (session ${sessionPresent ? "resumed" : "new"})`,
    );
    if (plan.publishes.length > 0 || plan.requests.length > 0) {
      s.logger.info(
        `re-sending ${plan.publishes.length} un-ACKed publishes and ${plan.requests.length} requests`,
      );
    }
    for (const p of plan.publishes) {
      proto.sendBytes(encodePublish(p.topic, p.payload, 1, p.id, p.retain, p.dup));
    }
    for (const request of plan.requests) proto.send(requestPacket(request));
    this.#armTimer();
    this.#notifyConnection(true);
    this.#pump();
  }

  #onClose(proto: MQTTProto, error: Error | undefined): void {
    if (proto !== this.#proto) return; // a handshake that failed: its attempt reports it
    this.#proto = undefined;
    this.#state.linkLost();
    this.#disarmIfIdle();
    if (!this.#closed) {
      this.#settings.logger.warn(`connection lost: ${error?.message ?? "closed"}`);
    }
    this.#notifyConnection(false);
    const wake = this.#linkDown;
    this.#linkDown = undefined;
    wake?.();
  }

  #notifyConnection(up: boolean): void {
    try {
      this.#settings.onConnectionChange?.(up);
    } catch (error) {
      this.#settings.logger.error(`onConnectionChange threw: ${errorText(error)}`);
    }
  }

  async #runOnConnect(sessionPresent: boolean): Promise<void> {
    const onConnect = this.#settings.onConnect;
    if (!onConnect) return;
    try {
      await onConnect(this, sessionPresent);
    } catch (error) {
      if (error instanceof ClientClosedError) return;
      this.#settings.logger.error(`onConnect failed: ${errorText(error)}`);
    }
  }

  #startSupervisor(): void {
    const s = this.#settings;
    this.#unlistenNet = s.net.onUp(() => {
      this.#netCameUp = true;
      this.#wake?.();
    });
    this.#supervisor = this.#supervise().catch((error) => {
      s.logger.error(`reconnect loop stopped unexpectedly: ${errorText(error)}`);
    });
  }

  /** Keeps a session up until disconnect(): reconnects with back-off, bounces the network. */
  async #supervise(): Promise<void> {
    const s = this.#settings;
    let tcpFailures = 0;
    while (!this.#closed) {
      if (this.#proto) {
        await new Promise<void>((resolve) => this.#linkDown = resolve);
        continue;
      }
      let delay: number;
      if (this.#netCameUp) {
        this.#netCameUp = false;
        tcpFailures = 0;
      }
      try {
        const bounce = tcpFailures > 0 && tcpFailures % s.bounceAfter === 0;
        if (bounce) {
          s.logger.warn(`${tcpFailures} connection attempts failed: bouncing the network`);
        }
        await s.net.ensureUp({ bounce, signal: this.#lifetime.signal });
        const sessionPresent = await this.#establish();
        tcpFailures = 0;
        this.#runOnConnect(sessionPresent); // in the background: never throws
        continue;
      } catch (error) {
        if (this.#closed) return;
        if (error instanceof ConnectionRefusedError) {
          delay = this.#backoff.cap();
          s.logger.error(`${error.message}; retrying in ${(delay / 1000).toFixed(1)} s`);
        } else {
          tcpFailures++;
          delay = this.#backoff.next();
          s.logger.warn(
            `connection attempt failed: ${errorText(error)}; retrying in ${
              (delay / 1000).toFixed(2)
            } s`,
          );
        }
      }
      await this.#sleep(delay);
    }
  }

  /** Sleeps `ms`, cut short by the network coming back up or by disconnect(). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  #abortConnecting(reason: unknown): void {
    this.#dialAbort?.abort(reason);
    const error = reason instanceof Error ? reason : new ClientClosedError(String(reason));
    this.#connecting?.close(error);
    this.#wake?.();
  }

  // ---- incoming packets --------------------------------------------------------

  #onPacket(proto: MQTTProto, packet: Packet): void {
    // Packets that share a read with the CONNACK arrive before the handshake's
    // continuation has made this proto the live one: they belong to it already.
    if (proto !== this.#proto && proto !== this.#connecting) return;
    const t = now();
    this.#handlePacket(proto, packet, t);
    // A packet may start the silence after which a write lets a Nagle
    // broker's held PUBACKs out. With a full window it is due at once: look
    // again when this read's calls have had their turn (a publish may yet
    // carry the ACK). Otherwise the timer looks. Any packet may also move the
    // next deadline earlier (a PINGRESP swaps ping + responseTime for the
    // next keepalive), so the timer is checked against the state every time.
    if (this.#state.ackNudgeDue(t)) this.#scheduleNudgeCheck(proto);
    this.#armTimer();
  }

  #scheduleNudgeCheck(proto: MQTTProto): void {
    if (this.#nudgeCheckScheduled) return;
    this.#nudgeCheckScheduled = true;
    setImmediate(() => {
      this.#nudgeCheckScheduled = false;
      if (proto === this.#proto && this.#state.ackNudgeDue(now())) this.#sendPing(proto, now());
    });
  }

  #handlePacket(proto: MQTTProto, packet: Packet, t: number): void {
    const state = this.#state;
    switch (packet.cmd) {
      case "puback": {
        const entry = state.pubackReceived(packet.messageId!, t);
        if (!entry) {
          this.#settings.logger.warn(
            `PUBACK for packet ${packet.messageId}, not in flight: ignored`,
          );
          return;
        }
        entry.settle?.();
        this.#afterAck();
        return;
      }
      case "suback":
      case "unsuback": {
        const kind = packet.cmd === "suback" ? "subscribe" : "unsubscribe";
        const request = state.responseReceived(packet.messageId!, kind, t);
        if (!request) {
          proto.close(
            new ProtocolError(`${packet.cmd.toUpperCase()} for unknown packet ${packet.messageId}`),
          );
          return;
        }
        request.settle?.(packet.cmd === "suback" ? packet.granted as number[] : []);
        this.#afterAck();
        return;
      }
      case "pingresp":
        state.pingrespReceived(t);
        return;
      case "publish":
        state.packetReceived(t);
        this.#receive(proto, packet);
        return;
      default:
        proto.close(new ProtocolError(`unexpected ${packet.cmd} packet from broker`));
    }
  }

  #afterAck(): void {
    if (this.#state.hasWindowRoom() && this.#roomWaiters.length > 0) {
      const waiters = this.#roomWaiters;
      this.#roomWaiters = [];
      for (const wake of waiters) wake();
    }
    if (this.#state.inflight.size === 0 && this.#idleWaiters.length > 0) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
    this.#pump();
  }

  #receive(proto: MQTTProto, packet: IPublishPacket): void {
    if (packet.qos === 2) {
      proto.close(
        new ProtocolError("QoS 2 PUBLISH from broker; this client subscribes at QoS 0/1"),
      );
      return;
    }
    const raw = packet.payload as Uint8Array;
    const payload = typeof raw === "string"
      ? encoder.encode(raw)
      : new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    this.#incoming.push({
      message: {
        topic: packet.topic,
        payload,
        qos: packet.qos,
        retained: packet.retain,
        dup: packet.dup,
      },
      id: packet.qos === 1 ? packet.messageId : undefined,
      proto,
    });
    if (this.#incoming.length >= INCOMING_PAUSE) proto.pauseReading();
    if (!this.#dispatching) this.#dispatch();
  }

  /** Delivers incoming messages one at a time, in order; PUBACK after all sinks settle. */
  async #dispatch(): Promise<void> {
    this.#dispatching = true;
    try {
      while (this.#incoming.length > 0) {
        const incoming = this.#incoming.shift()!;
        if (this.#incoming.length <= INCOMING_RESUME) incoming.proto.resumeReading();
        await this.#deliver(incoming.message);
        // The PUBACK goes on the connection the message came on, or nowhere: after a
        // reconnect the broker re-delivers it with DUP.
        if (incoming.id !== undefined && !incoming.proto.isClosed) {
          incoming.proto.send({ cmd: "puback", messageId: incoming.id });
          this.#state.packetSent(now());
        }
      }
    } finally {
      this.#dispatching = false;
    }
  }

  async #deliver(message: Message): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const sink of this.#sinks) {
      if (sink.filter !== undefined && !matchTopic(sink.filter, message.topic)) continue;
      try {
        const result = sink.deliver(message);
        if (result instanceof Promise) {
          pending.push(result.catch((error: unknown) => this.#handlerFailed(message, error)));
        }
      } catch (error) {
        this.#handlerFailed(message, error);
      }
    }
    if (pending.length > 0) await Promise.all(pending);
  }

  #handlerFailed(message: Message, error: unknown): void {
    this.#settings.logger.error(
      `message handler failed for "${message.topic}": ${errorText(error)} (message acknowledged)`,
    );
  }

  // ---- timers ---------------------------------------------------------------------

  /** Makes sure the one timer fires by the state's next deadline. */
  #armTimer(): void {
    const at = this.#state.nextDeadline();
    // Still armed while disconnect() waits for the last PUBACKs: dead-link
    // detection and the nudges for a Nagle broker's held ones run on it.
    if (at >= this.#timerAt || this.#stopped) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(0, at - now()));
  }

  /** Clears the timer when nothing is pending (the link is down). */
  #disarmIfIdle(): void {
    if (this.#timer === undefined || this.#state.nextDeadline() !== Infinity) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #onTimer(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const t = now();
    const dead = this.#state.deadLinkReason(t);
    const proto = this.#proto ?? this.#connecting;
    if (dead) {
      this.#settings.logger.warn(`link is dead: ${dead}`);
      proto?.close(new ResponseTimeoutError(dead));
    } else if (this.#proto) {
      if (this.#state.pingDue(t)) {
        this.#settings.logger.debug("sending PINGREQ");
        this.#sendPing(this.#proto, t);
      }
      // The broker fell silent after a packet while PUBACKs are due: a
      // broker running Nagle's algorithm may hold them until our TCP ACK,
      // which this PINGREQ carries at once.
      if (this.#state.ackNudgeDue(t)) this.#sendPing(this.#proto, t);
    }
    this.#armTimer();
  }

  #sendPing(proto: MQTTProto, t: number): void {
    proto.send({ cmd: "pingreq" }, URGENT);
    this.#state.pingSent(t);
  }

  // ---- shutdown ------------------------------------------------------------------

  /** Resolves when no PUBACK is outstanding, the link closes, or responseTime passes. */
  #waitIdle(proto: MQTTProto): Promise<void> {
    const idle = new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    return this.#bounded(Promise.race([idle, proto.closed]), this.#settings.responseTimeMs);
  }

  /** Waits for `promise`, or `ms` at most. */
  #bounded(promise: Promise<void>, ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  /** Stops everything and rejects every pending call. */
  #shutDown(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#unlistenNet?.();
    this.#unlistenNet = undefined;
    this.#proto?.close();
    this.#connecting?.close();
    this.#wake?.();
    this.#linkDown?.();
    const closed = () => new ClientClosedError("client was disconnected before the call completed");
    for (const item of this.#requestQueue.splice(0)) item.reject(closed());
    for (const item of this.#publishQueue.splice(0)) item.reject(closed());
    const { publishes, requests } = this.#state.takeAll();
    if (publishes.length > 0) {
      this.#settings.logger.warn(
        `${publishes.length} QoS 1 publishes were never acknowledged before disconnect()`,
      );
    }
    for (const publish of publishes) publish.settle?.(closed());
    for (const request of requests) request.settle?.(closed());
    for (const wake of this.#roomWaiters.splice(0)) wake();
    this.#idleWaiters = [];
    for (const sink of this.#sinks) {
      if (sink instanceof MessageIterator) sink.end();
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClientClosedError("client is disconnected; create a new one");
  }
}

function requestPacket(request: PendingRequest): Packet {
  if (request.kind === "subscribe") {
    return {
      cmd: "subscribe",
      messageId: request.id,
      subscriptions: request.filters.map((topic) => ({ topic, qos: request.qos })),
    };
  }
  return { cmd: "unsubscribe", messageId: request.id, unsubscriptions: [...request.filters] };
}

function checkQos(qos: unknown): asserts qos is 0 | 1 {
  if (qos === 2) {
    throw new RangeError("QoS 2 is not supported by this client; use QoS 0 or 1");
  }
  if (qos !== 0 && qos !== 1) throw new RangeError(`QoS must be 0 or 1, got ${show(qos)}`);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function noop(): void {}
