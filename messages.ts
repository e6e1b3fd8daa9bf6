/**
 * Incoming messages: the {@linkcode Message} shape, the sinks the client
 * dispatches to, and the pull-acknowledged iterator behind
 * `MQTTClient.messages()`.
 *
 * @module
 */

/** MQTT 5 properties of a message, as publish() takes them and messages carry them. */
export interface MessageProperties {
  /** Seconds until the broker drops the message if undelivered (Message Expiry Interval). */
  messageExpiry?: number;
  /** MIME type of the payload. */
  contentType?: string;
  /** Where a request's reply should go. */
  responseTopic?: string;
  /** Bytes that tie a reply to its request. */
  correlationData?: Uint8Array;
  /** Name/value pairs in the order sent (a name may repeat); publish() also takes a record. */
  userProperties?: [string, string][];
  /** "utf8" when the payload is UTF-8 text, "bytes" when it is unspecified bytes. */
  payloadFormat?: "utf8" | "bytes";
  /** Incoming only: the identifiers of the subscriptions that matched. */
  subscriptionIdentifiers?: number[];
}

/** An incoming message. */
export interface Message {
  /** Topic name. */
  topic: string;
  /** Payload bytes. */
  payload: Uint8Array;
  /** QoS it was delivered at. */
  qos: 0 | 1 | 2;
  /** Whether the broker sent it from its retained store. */
  retained: boolean;
  /** Whether the broker flagged it as a possible duplicate. */
  dup: boolean;
  /** MQTT 5 properties, when the message carried any. */
  properties?: MessageProperties;
}

/** A consumer of incoming messages: onMessage, an on() handler, or a messages() iterator. */
export interface Sink {
  /** Only topics matching this filter; undefined for all. */
  filter: string | undefined;
  /** Takes one message; a returned Promise holds the PUBACK until it settles. */
  deliver(message: Message): unknown;
}

/** The iterator behind {@linkcode MQTTClient.messages}; a sink with a pull-acknowledged buffer. */
export class MessageIterator implements AsyncIterableIterator<Message>, Sink {
  readonly filter: string | undefined;
  readonly #sinks: Set<Sink>;
  readonly #buffer: { message: Message; pulled: () => void }[] = [];
  #waiting: ((result: IteratorResult<Message>) => void) | undefined;
  #done = false;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => this.end();

  constructor(sinks: Set<Sink>, filter: string | undefined, signal: AbortSignal | undefined) {
    this.filter = filter;
    this.#sinks = sinks;
    this.#signal = signal;
    if (signal?.aborted) {
      this.#done = true;
      return;
    }
    signal?.addEventListener("abort", this.#onAbort, { once: true });
    sinks.add(this);
  }

  /** Resolves once the consumer pulled `message` (so the PUBACK may go out). */
  deliver(message: Message): Promise<void> {
    if (this.#done) return Promise.resolve();
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      waiting({ value: message, done: false });
      return Promise.resolve();
    }
    return new Promise((pulled) => this.#buffer.push({ message, pulled }));
  }

  next(): Promise<IteratorResult<Message>> {
    const head = this.#buffer.shift();
    if (head) {
      head.pulled();
      return Promise.resolve({ value: head.message, done: false });
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiting = resolve);
  }

  return(): Promise<IteratorResult<Message>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this;
  }

  /** Unregisters; releases buffered messages' acknowledgements. */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#sinks.delete(this);
    this.#signal?.removeEventListener("abort", this.#onAbort);
    for (const { pulled } of this.#buffer.splice(0)) pulled();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.({ value: undefined, done: true });
  }
}
