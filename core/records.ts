/**
 * The records the session keeps for outgoing work: a publish from the call
 * that made it until its last acknowledgement, and a SUBSCRIBE or
 * UNSUBSCRIBE until its answer. The client creates them from a call (they
 * carry the caller's resolve/reject), the state moves them through their
 * stages; no copy is made per message.
 *
 * @module
 */

import type { PublishProperties, QoS, Subscription } from "../codec/packets.ts";
import type { Pending } from "./actions.ts";

/** Accepted, not written yet (waiting for the link, the window or the store). */
export const QUEUED = 0;
/** Written; waiting for PUBACK (QoS 1) or PUBREC (QoS 2). */
export const SENT = 1;
/** QoS 2: PUBREC arrived; PUBREL waits for the store to make that durable. */
export const RECEIVED = 2;
/** QoS 2: PUBREL written; waiting for PUBCOMP. The PUBLISH is never sent again. */
export const RELEASED = 3;

/** Where an outgoing publish is in its life. */
export type PublishStage = typeof QUEUED | typeof SENT | typeof RECEIVED | typeof RELEASED;

function noop(): void {}

/** One outgoing publish, from the call to its last acknowledgement. */
export class OutgoingPublish implements Pending {
  /** Packet id (QoS 1/2), assigned when the state accepts it; 0 for QoS 0. */
  id = 0;
  /** See {@linkcode PublishStage}. */
  stage: PublishStage = QUEUED;
  /** Written before, on this or an earlier connection or process (DUP flag). */
  dup = false;
  /** When it (or its PUBREL) was last written. */
  sentAt = 0;
  /** Store sequence that must be durable before it is written (0: none). */
  seq = 0;
  /** Store sequence of its "PUBREC received" record (QoS 2). */
  relSeq = 0;
  /** The caller has been answered (or stopped waiting). */
  settled = false;
  /** Neighbours in acceptance order (the state's list of accepted publishes). */
  prev: OutgoingPublish | undefined = undefined;
  /** See {@linkcode prev}. */
  next: OutgoingPublish | undefined = undefined;
  /** Neighbours in the list of publishes in flight, in write order. */
  flightPrev: OutgoingPublish | undefined = undefined;
  /** See {@linkcode flightPrev}. */
  flightNext: OutgoingPublish | undefined = undefined;
  /** In the list of publishes in flight. */
  inFlight = false;

  /** A publish; `resolve`/`reject` answer its caller. */
  constructor(
    readonly topic: string,
    readonly payload: Uint8Array,
    readonly qos: QoS,
    readonly retain: boolean,
    readonly properties: PublishProperties | undefined,
    /** Answer on the last acknowledgement (true) or once written and windowed (false). */
    readonly sync: boolean,
    public resolve: (value: unknown) => void = noop,
    public reject: (error: Error) => void = noop,
  ) {}
}

/** A SUBSCRIBE or UNSUBSCRIBE, from the call to its answer. */
export class Request implements Pending {
  /** Packet id, assigned when written. */
  id = 0;
  /** When it was last written. */
  sentAt = 0;
  /** Written at least once. */
  sent = false;
  /** The caller has been answered. */
  settled = false;

  /** A request; `resolve`/`reject` answer its caller. */
  constructor(
    readonly kind: "subscribe" | "unsubscribe",
    /** Subscriptions (subscribe) or topic filters as subscriptions with qos 0 (unsubscribe). */
    readonly subscriptions: readonly Subscription[],
    /** v5: subscription identifier and user properties. */
    readonly properties:
      | { subscriptionIdentifier?: number; userProperties?: [string, string][] }
      | undefined,
    public resolve: (value: unknown) => void = noop,
    public reject: (error: Error) => void = noop,
  ) {}
}

/** Outgoing publishes in acceptance order, by id too: a linked list and a map. */
export class PublishList {
  readonly #byId = new Map<number, OutgoingPublish>();
  head: OutgoingPublish | undefined = undefined;
  tail: OutgoingPublish | undefined = undefined;

  /** How many are held. */
  get size(): number {
    return this.#byId.size;
  }

  /** The one with packet id `id`. */
  get(id: number): OutgoingPublish | undefined {
    return this.#byId.get(id);
  }

  /** Whether `id` is held. */
  has(id: number): boolean {
    return this.#byId.has(id);
  }

  /** Appends `record` (its id is set). */
  append(record: OutgoingPublish): void {
    this.#byId.set(record.id, record);
    record.prev = this.tail;
    record.next = undefined;
    if (this.tail) this.tail.next = record;
    else this.head = record;
    this.tail = record;
  }

  /** Removes `record`. */
  remove(record: OutgoingPublish): void {
    if (this.#byId.get(record.id) !== record) return;
    this.#byId.delete(record.id);
    if (record.prev) record.prev.next = record.next;
    else this.head = record.next;
    if (record.next) record.next.prev = record.prev;
    else this.tail = record.prev;
    record.prev = record.next = undefined;
  }

  /** Removes and returns everything, in order. */
  takeAll(): OutgoingPublish[] {
    const all: OutgoingPublish[] = [];
    for (let r = this.head; r; r = r.next) all.push(r);
    this.#byId.clear();
    this.head = this.tail = undefined;
    return all;
  }
}

/** Publishes in flight (written, not finished), in write order: the oldest sets the deadline. */
export class FlightList {
  head: OutgoingPublish | undefined = undefined;
  tail: OutgoingPublish | undefined = undefined;
  /** How many are in flight. */
  size = 0;

  /** Appends `record`. */
  add(record: OutgoingPublish): void {
    if (record.inFlight) return;
    record.inFlight = true;
    record.flightPrev = this.tail;
    record.flightNext = undefined;
    if (this.tail) this.tail.flightNext = record;
    else this.head = record;
    this.tail = record;
    this.size++;
  }

  /** Removes `record` (if in flight). */
  remove(record: OutgoingPublish): void {
    if (!record.inFlight) return;
    record.inFlight = false;
    if (record.flightPrev) record.flightPrev.flightNext = record.flightNext;
    else this.head = record.flightNext;
    if (record.flightNext) record.flightNext.flightPrev = record.flightPrev;
    else this.tail = record.flightPrev;
    record.flightPrev = record.flightNext = undefined;
    this.size--;
  }

  /** Empties the list. */
  clear(): void {
    for (let r = this.head; r; r = r.flightNext) r.inFlight = false;
    this.head = this.tail = undefined;
    this.size = 0;
  }
}

/** A FIFO queue with amortised O(1) shift. */
export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  /** How many are queued. */
  get length(): number {
    return this.#items.length - this.#head;
  }

  /** The first, without removing it. */
  peek(): T | undefined {
    return this.#items[this.#head];
  }

  /** Adds at the end. */
  push(item: T): void {
    this.#items.push(item);
  }

  /** Removes and returns the first. */
  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** Removes `item` wherever it is; whether it was there. */
  remove(item: T): boolean {
    const index = this.#items.indexOf(item, this.#head);
    if (index < 0) return false;
    this.#items.splice(index, 1);
    return true;
  }

  /** Removes and returns everything, in order. */
  takeAll(): T[] {
    const all = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return all;
  }

  /** Iterates in order. */
  *[Symbol.iterator](): Iterator<T> {
    for (let i = this.#head; i < this.#items.length; i++) yield this.#items[i] as T;
  }
}
