/**
 * `MQTTClient`, the public face: configuration, the calls users make and
 * their validation. Behind it, the engine (client/_engine.ts) applies the
 * session state's decisions, the supervisor (client/_supervisor.ts) keeps a
 * connection up, and the dispatcher (client/_dispatch.ts) delivers messages.
 *
 * @module
 */

import { errorText } from "./_bytes.ts";
import { Dispatcher } from "./client/_dispatch.ts";
import { Engine } from "./client/_engine.ts";
import { Supervisor } from "./client/_supervisor.ts";
import { worldOf } from "./client/_world.ts";
import { defaultDialer } from "./client/_dialer.ts";
import {
  checkPublish,
  checkSubscribe,
  type PublishOptions,
  type SignalOptions,
  type SubscribeOptions,
} from "./client/_calls.ts";
import { Requester, type RequestOptions } from "./client/_requester.ts";
import { type Clock, realClock } from "./core/clock.ts";
import { OutgoingPublish, Request } from "./core/records.ts";
import type { SessionConfig } from "./core/state.ts";
import { ClientClosedError } from "./errors.ts";
import { type Message, MessageIterator, type Sink } from "./messages.ts";
import { type MQTTClientOptions, resolveSettings, type Settings } from "./options.ts";
import { show, validateTopicFilter } from "./topic.ts";

export type { PublishOptions, SignalOptions, SubscribeOptions } from "./client/_calls.ts";
export type { RequestOptions } from "./client/_requester.ts";

/** Options of {@linkcode MQTTClient.reauthenticate}. */
export interface ReauthenticateOptions {
  /** Authentication Data of the first AUTH. Default: `auth.data` from the options. */
  data?: Uint8Array;
  /** Aborting rejects the call (the exchange itself goes on). */
  signal?: AbortSignal;
}

const encoder = new TextEncoder();

/**
 * An MQTT 3.1.1 and 5 client that loses no QoS 1/2 message: unacknowledged
 * publishes are re-sent on the next connection with their original packet
 * id and DUP, in order; the connection heals itself.
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
  readonly #engine: Engine;
  readonly #supervisor: Supervisor;
  readonly #dispatcher: Dispatcher;
  #requester: Requester | undefined;
  readonly #clock: Clock;
  #opened: Promise<void> | undefined; // the store, opened and restored once
  /**
   * Calls made before the store was opened and its session restored: they
   * wait here, in call order, so none takes a packet id the store still holds.
   */
  #early: { call: OutgoingPublish | Request; run: () => void }[] | undefined = [];
  #started = false;
  #closed = false; // disconnect() was called

  /**
   * Creates a client; nothing happens on the network until
   * {@linkcode connect} or {@linkcode start}. Throws TypeError or RangeError
   * for a bad option, naming it.
   */
  constructor(options: MQTTClientOptions) {
    const s = this.#settings = resolveSettings(options);
    const world = worldOf(options);
    const clock = this.#clock = world.clock ?? realClock;
    this.#dispatcher = new Dispatcher(s.logger);
    this.#engine = new Engine({
      session: sessionConfig(s),
      clock,
      logger: s.logger,
      maxPacketSize: s.maxPacketSize,
      dispatcher: this.#dispatcher,
      onLinkChange: (up, error) => this.#linkChanged(up, error),
      probe: world.engineProbe,
      store: s.store,
      onAuthChallenge: s.auth?.onChallenge,
    });
    this.#dispatcher.onDone = (ticket) => this.#engine.delivered(ticket);
    this.#supervisor = new Supervisor(this.#engine, {
      endpoints: s.endpoints,
      dial: world.dial ?? defaultDialer(s),
      net: s.net,
      clock,
      random: world.random ?? Math.random,
      logger: s.logger,
      initialDelayMs: s.initialDelayMs,
      maxDelayMs: s.maxDelayMs,
      bounceAfter: s.bounceAfter,
      responseTimeMs: s.responseTimeMs,
      clientId: s.clientId,
      onConnect: (sessionPresent) => this.#runOnConnect(sessionPresent),
      prepare: () => this.#open(),
    });
    if (world.supervisorProbe) Object.assign(this.#supervisor.probe, world.supervisorProbe);
    if (s.onMessage) {
      const handler = s.onMessage;
      this.#dispatcher.sinks.add({
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
    return this.#engine.connected;
  }

  /** How many QoS 1/2 publishes are written and wait for their acknowledgement. */
  get inflightCount(): number {
    return this.#engine.state.inflight;
  }

  /**
   * Connects once; resolves after the broker accepted (and after `onConnect`
   * has run), rejects with a {@linkcode ConnectionRefusedError} naming the
   * reason (e.g. "not authorized") or a ConnectionLostError or
   * ResponseTimeoutError. After success the client keeps the connection up
   * by itself until {@linkcode disconnect}.
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
    try {
      signal?.throwIfAborted();
      await this.#open();
      await this.#settings.net.ensureUp({ bounce: false, signal });
      signal?.throwIfAborted();
      const sessionPresent = await this.#supervisor.establish(signal);
      this.#supervisor.run();
      await this.#runOnConnect(sessionPresent);
    } catch (error) {
      this.#started = false;
      if (signal?.aborted) throw signal.reason;
      throw error;
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
    this.#supervisor.run(); // opens the store first, retrying with the back-off
  }

  /** Opens the store once and loads what it kept; a failed open is tried again next time. */
  #open(): Promise<void> {
    this.#opened ??= this.#engine.openStore(this.#settings.clientId).then(() => {
      const early = this.#early ?? [];
      this.#early = undefined;
      for (const { run } of early) run();
    }, (error) => {
      this.#opened = undefined;
      throw new Error(`cannot open the session store: ${errorText(error)}`, { cause: error });
    });
    return this.#opened;
  }

  /**
   * Publishes a message. QoS 0 resolves once written; QoS 1/2 with `sync:
   * true` (default) resolve on the last acknowledgement; with `sync: false`
   * they stream. While disconnected the call waits for the connection; it
   * never fails because of a reconnect. Bad arguments reject with
   * TypeError/RangeError before anything is sent.
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
    if (this.#closed) return Promise.reject(new ClientClosedError("client is disconnected"));
    let record: OutgoingPublish;
    try {
      const p = checkPublish(topic, payload, options, this.#settings.protocolVersion);
      record = new OutgoingPublish(topic, p.payload, p.qos, p.retain, p.properties, p.sync);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#call(record, options.signal, () => this.#engine.publish(record)) as Promise<void>;
  }

  /**
   * Subscribes to a topic filter (`+` and `#` allowed; `$share/<group>/...`
   * for a shared subscription) at QoS 0, 1 or 2, given as a number or, for
   * MQTT 5 options, an object. Resolves with the QoS the broker granted;
   * rejects with {@linkcode SubscriptionRefusedError} when the broker
   * refuses. A subscribe that got no answer before a connection dropped is
   * re-sent on the next one.
   *
   * @example
   * ```ts ignore
   * await client.subscribe("sensors/+/temp", 1);
   * await client.subscribe("jobs/#", { qos: 2, noLocal: true }); // MQTT 5 options
   * ```
   */
  subscribe(
    filter: string,
    qos: 0 | 1 | 2 | SubscribeOptions = 0,
    options: SignalOptions = {},
  ): Promise<number> {
    if (this.#closed) return Promise.reject(new ClientClosedError("client is disconnected"));
    let request: Request;
    let signal: AbortSignal | undefined;
    try {
      const s = checkSubscribe(filter, qos, this.#settings.protocolVersion);
      signal = (typeof qos === "object" ? qos.signal : undefined) ?? options.signal;
      request = new Request("subscribe", [s.subscription], s.properties);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#call(request, signal, () => this.#engine.request(request)) as Promise<number>;
  }

  /** Unsubscribes from a topic filter; resolves on the UNSUBACK. */
  unsubscribe(filter: string, options: SignalOptions = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new ClientClosedError("client is disconnected"));
    try {
      validateTopicFilter(filter);
    } catch (error) {
      return Promise.reject(error);
    }
    const request = new Request("unsubscribe", [{ topic: filter, qos: 0 }], undefined);
    const run = () => this.#engine.request(request);
    return this.#call(request, options.signal, run) as Promise<void>;
  }

  /**
   * MQTT 5 request/response: publishes `payload` to `topic` with a Response
   * Topic of this client's own (subscribed once, on first use) and fresh
   * Correlation Data, and resolves with the reply, the message a responder
   * publishes to that topic with the same correlation data. Concurrent
   * requests each get their own reply; replies do not reach `onMessage`,
   * `on()` or `messages()`. `signal` or `timeoutMs` end the wait (a late
   * reply is dropped). A TypeError on a 3.1.1 client.
   *
   * @example
   * ```ts ignore
   * const reply = await client.request("svc/echo", "ping", { signal: AbortSignal.timeout(5000) });
   * console.log(new TextDecoder().decode(reply.payload));
   * // The responder:
   * responder.on("svc/echo", (m) =>
   *   responder.publish(m.properties!.responseTopic!, m.payload, {
   *     properties: { correlationData: m.properties!.correlationData },
   *   }));
   * ```
   */
  request(
    topic: string,
    payload: string | Uint8Array,
    options: RequestOptions = {},
  ): Promise<Message> {
    if (this.#closed) return Promise.reject(new ClientClosedError("client is disconnected"));
    if (this.#settings.protocolVersion !== 5) {
      return Promise.reject(
        new TypeError("request() needs an MQTT 5 client (protocolVersion: 5)"),
      );
    }
    if (this.#requester === undefined) {
      const requester = this.#requester = new Requester({
        clientId: this.clientId,
        subscribe: (filter, options) => this.subscribe(filter, options),
        publish: (topic, payload, options) => this.publish(topic, payload, options),
        clock: this.#clock,
      });
      this.#dispatcher.intercept = requester.intercept;
    }
    return this.#requester.request(topic, payload, options);
  }

  /**
   * MQTT 5 re-authentication (enhanced authentication, the `auth` option):
   * sends AUTH with reason 0x19 on the live connection; the broker's
   * challenges go to `auth.onChallenge` as during CONNECT. Resolves when the
   * broker answers with success; a broker that refuses disconnects the
   * client, and the call rejects with that `ServerDisconnectError`
   * (its `reasonCode` says why). Rejects at once when not connected.
   */
  reauthenticate(options: ReauthenticateOptions = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new ClientClosedError("client is disconnected"));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal!.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      const call = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error: Error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#engine.reauthenticate(call, options.data ?? this.#settings.auth?.data);
    });
  }

  /** Wires `call` to a promise (and its signal), then hands it to the engine. */
  #call(
    call: OutgoingPublish | Request,
    signal: AbortSignal | undefined,
    run: () => void,
  ): Promise<unknown> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      if (signal === undefined) {
        call.resolve = resolve;
        call.reject = reject;
      } else {
        // Still queued: withdrawn, never sent. Already written: not taken
        // back, but the caller stops waiting.
        const onAbort = () => {
          const early = this.#early?.findIndex((e) => e.call === call) ?? -1;
          if (early >= 0) {
            this.#early!.splice(early, 1);
            call.reject(asError(signal.reason));
          } else {
            this.#engine.abort(call, asError(signal.reason));
          }
        };
        signal.addEventListener("abort", onAbort, { once: true });
        call.resolve = (value) => {
          signal.removeEventListener("abort", onAbort);
          resolve(value);
        };
        call.reject = (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        };
      }
      if (this.#early !== undefined) this.#early.push({ call, run });
      else run();
    });
  }

  /**
   * Disconnects for good: waits up to `responseTime` for written publishes
   * to be acknowledged, sends DISCONNECT (so the broker does not publish the
   * will), closes, and rejects every call still pending with
   * {@linkcode ClientClosedError}. Leaves no timer running. Calling it again
   * does nothing.
   */
  async disconnect(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Nothing more reaches the application; what it has not been handed was
    // not acknowledged, so a persistent session gets it again.
    this.#dispatcher.stop();
    await this.#engine.disconnect();
    await this.#supervisor.stop();
    const early = this.#early ?? [];
    this.#early = undefined;
    for (const { call } of early) {
      call.reject(new ClientClosedError("client was disconnected before the session store opened"));
    }
    const waiting = this.#engine.stop();
    const s = this.#settings;
    const unacked = waiting.filter((c) => c instanceof OutgoingPublish && c.stage !== 0).length;
    if (unacked > 0) {
      s.logger.warn(`${unacked} publishes were never acknowledged before disconnect()`);
    }
    const kept = s.store
      ? "; it stays in the store and is sent when a client resumes the session"
      : "";
    for (const call of waiting) {
      const stored = call instanceof OutgoingPublish && call.qos > 0 ? kept : "";
      call.reject(
        new ClientClosedError(`client was disconnected before the call completed${stored}`),
      );
    }
    this.#requester?.close();
    this.#dispatcher.endIterators();
    await this.#engine.closeStore();
  }

  /** `await using client = new MQTTClient(...)` ends with {@linkcode disconnect}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.disconnect();
  }

  /**
   * Registers `handler` for messages whose topic matches `filter` (MQTT
   * wildcards; a `$share/<group>/<filter>` matches as `<filter>`). Returns a
   * function that removes it. A handler that throws is logged; the others
   * still run. For QoS 1/2 the acknowledgement waits for all handlers.
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
    this.#dispatcher.sinks.add(sink);
    return () => this.#dispatcher.sinks.delete(sink);
  }

  /**
   * Incoming messages as an async iterator, optionally only those matching
   * `filter`. A QoS 1/2 message is acknowledged only after the loop pulled
   * it; a slow loop makes the client stop reading the socket once a small
   * buffer is full. Ending the loop (break, return, abort) unregisters it.
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
    return new MessageIterator(this.#dispatcher.sinks, filter, options.signal);
  }

  // ---- connection events --------------------------------------------------------

  #linkChanged(up: boolean, error: Error | undefined): void {
    if (!up) this.#supervisor.linkDown(error);
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

  #assertOpen(): void {
    if (this.#closed) throw new ClientClosedError("client is disconnected; create a new one");
  }
}

function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}

/** The session state's settings from the client's. */
function sessionConfig(s: Settings): SessionConfig {
  const v5 = s.protocolVersion === 5;
  const config: SessionConfig = {
    protocolVersion: s.protocolVersion,
    clientId: s.clientId,
    keepalive: s.keepalive,
    responseTimeMs: s.responseTimeMs,
    clean: s.clean,
    maxInflight: s.maxInflight,
    maxInflightQos2: s.maxInflightQos2,
    highWaterMark: 256 * 1024,
    sessionExpiry: s.sessionExpiry,
    durable: s.store !== undefined,
    gated: s.store !== undefined && !s.store.durableOnAppend,
  };
  if (s.user !== undefined) config.username = s.user;
  if (s.password !== undefined) config.password = encoder.encode(s.password);
  if (s.will !== undefined) config.will = s.will;
  if (v5) {
    config.connectProperties = {
      receiveMaximum: 65_535,
      maximumPacketSize: s.maxPacketSize,
      topicAliasMaximum: 64,
      ...(s.userProperties ? { userProperties: s.userProperties } : {}),
      ...(s.auth ? { authenticationMethod: s.auth.method } : {}),
      ...(s.auth?.data ? { authenticationData: s.auth.data } : {}),
    };
  }
  return config;
}
