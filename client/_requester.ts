/**
 * `client.request()` (MQTT 5 request/response): one response topic per
 * client, subscribed once on first use; each request carries it as its
 * Response Topic with fresh Correlation Data, and the reply with the same
 * correlation data settles that request alone. Replies are taken before
 * `onMessage`, `on()` and `messages()` see them.
 *
 * @module
 */

import type { Clock, TimerHandle } from "../core/clock.ts";
import { ClientClosedError, ResponseTimeoutError } from "../errors.ts";
import type { Message } from "../messages.ts";
import { show } from "../topic.ts";
import { checkQos, type PublishOptions } from "./_calls.ts";

/** Options of {@linkcode MQTTClient.request}. */
export interface RequestOptions {
  /** Aborting rejects the request with the signal's reason (a late reply is dropped). */
  signal?: AbortSignal;
  /** Rejects with a ResponseTimeoutError when no reply came within this many ms. */
  timeoutMs?: number;
  /** QoS of the request's PUBLISH. Default 1. */
  qos?: 0 | 1 | 2;
  /**
   * Further MQTT 5 properties of the request (Response Topic and
   * Correlation Data are the client's own).
   */
  properties?: Omit<NonNullable<PublishOptions["properties"]>, "responseTopic" | "correlationData">;
}

/** What the requester needs from the client. */
export interface RequesterHost {
  /** The client id, part of the response topic. */
  clientId: string;
  /** Subscribes (the client's own subscribe). */
  subscribe(filter: string, options: { qos: 0 | 1 | 2 }): Promise<number>;
  /** Publishes (the client's own publish). */
  publish(topic: string, payload: string | Uint8Array, options: PublishOptions): Promise<void>;
  /** Time and timers. */
  clock: Clock;
}

interface Waiter {
  resolve(message: Message): void;
  reject(error: Error): void;
}

/** The requests of one client; see the module doc. */
export class Requester {
  readonly #host: RequesterHost;
  readonly #topic: string;
  readonly #prefix: string;
  readonly #waiters = new Map<string, Waiter>();
  #subscribed: Promise<unknown> | undefined;
  #count = 0;
  #closed = false;

  /** A requester for `host`, with a response topic of its own. */
  constructor(host: RequesterHost) {
    this.#host = host;
    const random = hex(crypto.getRandomValues(new Uint8Array(6)));
    const id = host.clientId.replace(/[+#/]/g, "_").replaceAll("\0", "_") || "client";
    this.#topic = `mqtt_async/replies/${id}/${random}`;
    this.#prefix = hex(crypto.getRandomValues(new Uint8Array(8)));
  }

  /** The response topic requests carry. */
  get responseTopic(): string {
    return this.#topic;
  }

  /** Requests waiting for their reply. */
  get pending(): number {
    return this.#waiters.size;
  }

  /** Takes `message` if it came on the response topic; true when taken. */
  intercept = (message: Message): boolean => {
    if (message.topic !== this.#topic) return false;
    const data = message.properties?.correlationData;
    if (data !== undefined) this.#waiters.get(hex(data))?.resolve(message);
    return true; // a reply nobody waits for any more (late, aborted) is dropped
  };

  /** Sends a request and resolves with its reply; see {@linkcode MQTTClient.request}. */
  async request(
    topic: string,
    payload: string | Uint8Array,
    options: RequestOptions = {},
  ): Promise<Message> {
    if (options === null || typeof options !== "object") {
      throw new TypeError(`request options must be an object, got ${show(options)}`);
    }
    const { signal, timeoutMs } = options;
    const qos = options.qos ?? 1;
    checkQos(qos);
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
      throw new RangeError(`request timeoutMs must be a positive number, got ${show(timeoutMs)}`);
    }
    const extra = options.properties as Record<string, unknown> | undefined;
    if (extra?.responseTopic !== undefined || extra?.correlationData !== undefined) {
      throw new TypeError("request() sets responseTopic and correlationData itself");
    }
    if (this.#closed) throw new ClientClosedError("client is disconnected");
    signal?.throwIfAborted();

    const key = `${this.#prefix}${(++this.#count).toString(16).padStart(8, "0")}`;
    const correlationData = fromHex(key);
    let timer: TimerHandle | undefined;
    let onAbort: (() => void) | undefined;
    const reply = new Promise<Message>((resolve, reject) => {
      this.#waiters.set(key, { resolve, reject });
      if (signal !== undefined) {
        onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
      }
      if (timeoutMs !== undefined) {
        timer = this.#host.clock.setTimer(
          () =>
            reject(
              new ResponseTimeoutError(
                `no reply to the request on "${topic}" within ${timeoutMs} ms`,
              ),
            ),
          timeoutMs,
        );
      }
    });
    const waiter = this.#waiters.get(key)!;
    try {
      // The request goes out only once the response topic is subscribed.
      this.#subscribe().then(() => {
        if (!this.#waiters.has(key)) return;
        return this.#host.publish(topic, payload, {
          qos,
          signal,
          properties: { ...options.properties, responseTopic: this.#topic, correlationData },
        });
      }).catch(waiter.reject);
      return await reply;
    } finally {
      this.#waiters.delete(key);
      if (timer !== undefined) this.#host.clock.clearTimer(timer);
      if (onAbort !== undefined) signal!.removeEventListener("abort", onAbort);
    }
  }

  /** Subscribes to the response topic once; a failed subscribe is tried again next time. */
  #subscribe(): Promise<unknown> {
    this.#subscribed ??= this.#host.subscribe(this.#topic, { qos: 1 }).catch((error) => {
      this.#subscribed = undefined;
      throw error;
    });
    return this.#subscribed;
  }

  /** The client is disconnecting: every request still waiting rejects. */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiters.values()) {
      waiter.reject(new ClientClosedError("client was disconnected before the reply came"));
    }
    this.#waiters.clear();
  }
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

function fromHex(s: string): Uint8Array {
  const bytes = new Uint8Array(s.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}
