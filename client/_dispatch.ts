/**
 * Incoming dispatch: messages go to every matching sink (onMessage, on()
 * handlers, messages() iterators) one at a time, in order; a message's
 * acknowledgement is reported once every sink is done with it. A backlog
 * stops reading from the connection until it shrinks.
 *
 * @module
 */

import { errorText } from "../_bytes.ts";
import type { Logger } from "../logger.ts";
import { type Message, MessageIterator, type Sink } from "../messages.ts";
import type { MQTTProto } from "../proto.ts";
import { matchTopic } from "../topic.ts";

/** Queued messages before the connection stops being read. */
const PAUSE_AT = 64;
/** ... and when reading resumes. */
const RESUME_AT = 16;

/** See the module doc. */
export class Dispatcher {
  readonly sinks = new Set<Sink>();
  /** Sees every message first; true takes it from the sinks (replies to client.request()). */
  intercept: ((message: Message) => boolean) | undefined = undefined;
  readonly #logger: Logger;
  /** Told when the application is done with a message that carried a ticket. */
  onDone: (ticket: number) => void = () => {};
  #messages: Message[] = [];
  #tickets: number[] = [];
  #protos: (MQTTProto | undefined)[] = [];
  #head = 0;
  #running = false;
  #stopped = false;

  /** A dispatcher logging handler failures to `logger`. */
  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Queues messages (from `proto`) and starts dispatching on a microtask if idle. */
  push(
    messages: readonly Message[],
    tickets: readonly number[],
    proto: MQTTProto | undefined,
  ): void {
    if (this.#stopped) return;
    for (let i = 0; i < messages.length; i++) {
      this.#messages.push(messages[i]);
      this.#tickets.push(tickets[i]);
      this.#protos.push(proto);
    }
    if (this.#messages.length - this.#head >= PAUSE_AT) proto?.pauseReading();
    if (!this.#running) {
      this.#running = true;
      // Never inside the engine's apply: a handler may call the client at once.
      queueMicrotask(() => this.#run());
    }
  }

  async #run(): Promise<void> {
    try {
      while (this.#head < this.#messages.length && !this.#stopped) {
        const i = this.#head;
        const message = this.#messages[i];
        const ticket = this.#tickets[i];
        const proto = this.#protos[i];
        this.#head++;
        if (this.#messages.length - this.#head <= RESUME_AT) proto?.resumeReading();
        const pending = this.#deliver(message);
        if (pending !== undefined) await pending;
        if (ticket !== 0) this.onDone(ticket);
        if (this.#head > 1024 && this.#head * 2 > this.#messages.length) this.#compact();
      }
      this.#messages = [];
      this.#tickets = [];
      this.#protos = [];
      this.#head = 0;
    } catch (error) {
      this.#logger.error(`dispatch stopped: ${errorText(error)}`);
    } finally {
      this.#running = false;
    }
  }

  #compact(): void {
    this.#messages = this.#messages.slice(this.#head);
    this.#tickets = this.#tickets.slice(this.#head);
    this.#protos = this.#protos.slice(this.#head);
    this.#head = 0;
  }

  /** Hands `message` to every matching sink; a Promise when some sink is not done yet. */
  #deliver(message: Message): Promise<unknown> | undefined {
    if (this.intercept !== undefined && this.intercept(message)) return undefined;
    let pending: Promise<unknown>[] | undefined;
    for (const sink of this.sinks) {
      if (sink.filter !== undefined && !matchTopic(sink.filter, message.topic)) continue;
      try {
        const result = sink.deliver(message);
        if (result instanceof Promise) {
          (pending ??= []).push(result.catch((error: unknown) => this.#failed(message, error)));
        }
      } catch (error) {
        this.#failed(message, error);
      }
    }
    if (pending === undefined) return undefined;
    return pending.length === 1 ? pending[0] : Promise.all(pending);
  }

  #failed(message: Message, error: unknown): void {
    this.#logger.error(
      `message handler failed for "${message.topic}": ${errorText(error)} (message acknowledged)`,
    );
  }

  /**
   * The client is disconnecting: messages not yet handed to the application
   * are dropped (unacknowledged, so the broker sends QoS 1 and 2 ones again
   * with the session), and nothing more is delivered. A handler running now
   * finishes.
   */
  stop(): void {
    this.#stopped = true;
    this.#messages = [];
    this.#tickets = [];
    this.#protos = [];
    this.#head = 0;
  }

  /** Ends every messages() iterator (the client is done). */
  endIterators(): void {
    for (const sink of this.sinks) {
      if (sink instanceof MessageIterator) sink.end();
    }
  }
}
