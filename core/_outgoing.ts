/**
 * Outgoing publishes: acceptance (packet id, store record), the queue, the
 * in-flight window, QoS 1 and QoS 2 acknowledgements, re-sends on a fresh
 * connection, and withdrawal.
 *
 * @module
 */

import { PublishRefusedError } from "../errors.ts";
import type { Actions } from "./actions.ts";
import { type Context, UP } from "./_context.ts";
import { OutgoingAliases } from "./_aliases.ts";
import { ackFrame, publishFrame } from "./_frames.ts";
import type { Liveness } from "./_liveness.ts";
import type { AdaptiveWindow } from "./_window.ts";
import {
  Fifo,
  FlightList,
  type OutgoingPublish,
  PublishList,
  QUEUED,
  RECEIVED,
  RELEASED,
  SENT,
} from "./records.ts";

/** Outgoing publishes of one session; see the module doc. */
export class Outgoing {
  readonly #ctx: Context;
  readonly #liveness: Liveness;
  readonly #window: AdaptiveWindow;
  /** Accepted QoS 1/2 publishes, in acceptance order, until their last acknowledgement. */
  readonly accepted = new PublishList();
  /** Written and not finished, in write order. */
  readonly #flight = new FlightList();
  /** Re-sends that did not fit the window of a fresh connection; they go before anything new. */
  readonly #resends = new Fifo<OutgoingPublish>();
  /** Publishes not written yet, all QoS, in call order. */
  readonly #queue = new Fifo<OutgoingPublish>();
  /** QoS 1/2 calls waiting for a free packet id (all 65 535 in use). */
  readonly #unaccepted = new Fifo<OutgoingPublish>();
  /** Streaming publishes written, waiting for room in the window to answer their caller. */
  #roomWaiters: OutgoingPublish[] = [];
  /** QoS 2 publishes whose PUBREC waits for the store, in order. */
  readonly #releases = new Fifo<OutgoingPublish>();
  /** QoS 2 publishes in flight (3.1.1 limits them separately). */
  inflightQos2 = 0;
  /** v5 topic aliases the broker knows from us on this connection. */
  readonly aliases = new OutgoingAliases();

  /** Outgoing state sharing `ctx`, timing and the window. */
  constructor(ctx: Context, liveness: Liveness, window: AdaptiveWindow) {
    this.#ctx = ctx;
    this.#liveness = liveness;
    this.#window = window;
  }

  /** Written QoS 1/2 publishes not finished. */
  get inflight(): number {
    return this.#flight.size;
  }

  /** Publishes not yet written, including those waiting for an id or a re-send slot. */
  get queued(): number {
    return this.#queue.length + this.#unaccepted.length + this.#resends.length;
  }

  /** Nothing to write and no streaming caller waiting for room: the sender is idle. */
  get idle(): boolean {
    return this.queued === 0 && this.#roomWaiters.length === 0;
  }

  // ---- calls ---------------------------------------------------------------

  /** A publish call: accept it (id, store record) and write it if it may go now. */
  add(record: OutgoingPublish, now: number, out: Actions): void {
    if (record.qos === 0) {
      this.#queue.push(record);
    } else if (this.#unaccepted.length > 0 || !this.#accept(record, out)) {
      this.#unaccepted.push(record);
      return;
    }
    this.pump(now, out);
  }

  /** Gives `record` a packet id and a store record; false when no id is free. */
  #accept(record: OutgoingPublish, out: Actions): boolean {
    const id = this.#ctx.nextId();
    if (id === 0) return false;
    record.id = id;
    this.accepted.append(record);
    if (this.#ctx.config.durable) {
      record.seq = this.#ctx.nextSeq();
      out.storeOps.push({ op: "put", record });
    }
    this.#queue.push(record);
    return true;
  }

  /**
   * A publish restored from the store: written before as far as the broker
   * may know, so it is re-sent (with DUP, or as PUBREL once released) on
   * the next connection, before anything new.
   */
  restore(record: OutgoingPublish, released: boolean): void {
    record.dup = true;
    record.stage = released ? RELEASED : QUEUED;
    this.accepted.append(record);
  }

  /**
   * The caller stopped waiting (its signal aborted). Not written yet: it is
   * withdrawn and never sent. Already written: it goes on; only the caller
   * is answered.
   */
  abort(record: OutgoingPublish, reason: Error, out: Actions): void {
    if (record.settled) return;
    record.settled = true;
    out.reject(record, reason);
    if (record.stage !== QUEUED || record.dup) return; // on the wire before: not taken back
    if (this.#unaccepted.remove(record)) return;
    this.#queue.remove(record);
    if (record.qos > 0) this.#forget(record, out);
  }

  // ---- writing ---------------------------------------------------------------

  /** Whether one more QoS `qos` publish fits the window now. */
  #hasRoom(qos: number): boolean {
    if (this.#flight.size >= this.#window.size) return false;
    return qos !== 2 || this.#ctx.config.protocolVersion === 5 ||
      this.inflightQos2 < this.#ctx.config.maxInflightQos2;
  }

  /** `record` is on the wire (again): in flight from `now`. */
  #fly(record: OutgoingPublish, now: number): void {
    record.sentAt = now;
    this.#flight.add(record);
    if (record.qos === 2) this.inflightQos2++;
  }

  #land(record: OutgoingPublish): void {
    if (!record.inFlight) return;
    this.#flight.remove(record);
    if (record.qos === 2) this.inflightQos2--;
  }

  /** Writes deferred re-sends, then queued publishes, in order, while everything allows. */
  pump(now: number, out: Actions): void {
    const ctx = this.#ctx;
    if (ctx.phase !== UP || ctx.closing) return;
    if (this.#resends.length > 0 && !this.#pumpResends(now, out)) return;
    const queue = this.#queue;
    for (let record = queue.peek(); record !== undefined; record = queue.peek()) {
      if (!ctx.writable()) return;
      if (record.qos === 0) {
        queue.shift();
        const frame = this.#firstFrame(record, out);
        if (frame === undefined) continue;
        ctx.emit(out, frame, false, now);
        if (!record.settled) {
          record.settled = true;
          out.resolve(record, undefined);
        }
        continue;
      }
      if (record.seq > ctx.durableSeq) return; // its store record is not durable yet
      if (!this.#hasRoom(record.qos)) {
        this.#window.limited = true;
        return;
      }
      queue.shift();
      const frame = this.#firstFrame(record, out);
      if (frame === undefined) {
        this.#forget(record, out);
        continue;
      }
      record.stage = SENT;
      this.#fly(record, now);
      this.#window.limited = this.#flight.size >= this.#window.size;
      // A sync caller waits for the answer: no macrotask's delay. A stream's
      // publishes wait for the macrotask, to share one write.
      ctx.emit(out, frame, record.sync, now);
      if (!record.sync && !record.settled) {
        if (this.#hasRoom(record.qos)) {
          record.settled = true;
          out.resolve(record, undefined);
        } else {
          this.#roomWaiters.push(record);
        }
      }
    }
  }

  /** Writes deferred re-sends while the window has room; whether all went out. */
  #pumpResends(now: number, out: Actions): boolean {
    const ctx = this.#ctx;
    const version = ctx.config.protocolVersion;
    for (let r = this.#resends.peek(); r !== undefined; r = this.#resends.peek()) {
      if (!ctx.writable() || !this.#hasRoom(r.qos)) return false;
      this.#resends.shift();
      this.#resendOne(r, version, now, out);
    }
    return true;
  }

  #resendOne(r: OutgoingPublish, version: 4 | 5, now: number, out: Actions): void {
    this.#fly(r, now);
    if (r.stage === RECEIVED && r.relSeq <= this.#ctx.durableSeq) r.stage = RELEASED;
    if (r.stage === RELEASED) {
      this.#ctx.emit(out, ackFrame("pubrel", r.id, version), false, now);
    } else if (r.stage !== RECEIVED) {
      // RECEIVED: its PUBREL waits for the store (see #releases).
      r.stage = SENT;
      r.dup = true;
      const frame = this.#fitting(r, publishFrame(r, version, true), out);
      if (frame === undefined) {
        // A new broker with a smaller limit: it can never take this one.
        this.#land(r);
        this.#forget(r, out);
        return;
      }
      this.#ctx.emit(out, frame, false, now);
    }
  }

  /**
   * The frame of `record`'s first write: with a topic alias where the broker
   * takes them (alias only once the broker knows it), undefined when the
   * broker cannot take the publish (the caller is answered, nothing is sent).
   * A re-send never uses an alias: it carries its topic.
   */
  #firstFrame(record: OutgoingPublish, out: Actions): Uint8Array | undefined {
    if (this.#refusedByBroker(record, out)) return undefined;
    const version = this.#ctx.config.protocolVersion;
    const aliases = this.aliases;
    if (aliases.max !== 0) {
      const topic = record.topic;
      const known = aliases.known(topic);
      if (known !== 0) {
        return this.#fitting(record, publishFrame(record, version, false, known, true), out);
      }
      const fresh = aliases.offer(topic);
      if (fresh !== 0) {
        const frame = publishFrame(record, version, false, fresh);
        if (frame.length <= this.#ctx.limits.maximumPacketSize) {
          aliases.set(topic, fresh); // written in this event, on this connection
          return frame;
        }
      }
    }
    return this.#fitting(record, publishFrame(record, version, false), out);
  }

  /**
   * `frame`, unless it is larger than the broker's Maximum Packet Size (v5):
   * then the publish is refused with a RangeError naming both sizes and
   * nothing is sent (MQTT-3.2.2-15).
   */
  #fitting(record: OutgoingPublish, frame: Uint8Array, out: Actions): Uint8Array | undefined {
    const limit = this.#ctx.limits.maximumPacketSize;
    if (frame.length <= limit) return frame;
    if (!record.settled) {
      record.settled = true;
      out.reject(
        record,
        new RangeError(
          `publish to "${record.topic}" not sent: the PUBLISH is ${frame.length} bytes, ` +
            `over the broker's Maximum Packet Size of ${limit} bytes`,
        ),
      );
    }
    return undefined;
  }

  /** A publish the current broker cannot take (v5 limits): rejected, not sent. */
  #refusedByBroker(record: OutgoingPublish, out: Actions): boolean {
    const limits = this.#ctx.limits;
    let problem: string | undefined;
    if (record.qos > limits.maximumQoS) {
      problem =
        `the broker accepts QoS ${limits.maximumQoS} at most, the publish has QoS ${record.qos}`;
    } else if (record.retain && !limits.retainAvailable) {
      problem = "the broker does not accept retained messages";
    }
    if (problem === undefined) return false;
    if (!record.settled) {
      record.settled = true;
      out.reject(record, new RangeError(`publish to "${record.topic}" not sent: ${problem}`));
    }
    return true;
  }

  /**
   * A fresh connection is up: what the broker may not have goes again, in
   * acceptance order, before anything new and within the new window (the
   * rest waits for room). A publish not yet acknowledged goes as PUBLISH
   * with DUP, a released QoS 2 one as PUBREL. `republish`: the broker lost
   * the session, so QoS 2 exchanges past PUBREC start over with the PUBLISH
   * (the broker may have lost the message; at least once beats a loss).
   */
  resend(now: number, out: Actions, republish: boolean): number {
    this.#flight.clear();
    this.inflightQos2 = 0;
    this.#resends.takeAll();
    this.aliases.reset(this.#ctx.limits.topicAliasMaximum); // aliases are per connection
    // All of them queue as re-sends, in acceptance order, and go out while the
    // window has room: one that must wait holds the rest behind it (MQTT-4.6.0-1).
    for (let r = this.accepted.head; r !== undefined; r = r.next) {
      if (r.stage === QUEUED && !r.dup) break; // never written: new, the queue has it
      if (republish && (r.stage === RECEIVED || r.stage === RELEASED)) r.stage = SENT;
      if (r.stage === SENT) r.stage = QUEUED;
      r.dup = true;
      this.#resends.push(r);
    }
    const count = this.#resends.length;
    this.#pumpResends(now, out);
    this.#releaseDurable(now, out);
    return count;
  }

  // ---- acknowledgements -------------------------------------------------------

  /** A PUBACK arrived. */
  puback(
    id: number,
    reasonCode: number,
    reasonString: string | undefined,
    now: number,
    out: Actions,
  ): void {
    const record = this.accepted.get(id);
    if (record === undefined || record.qos !== 1 || record.stage !== SENT) {
      out.log("warn", `PUBACK for packet ${id}, not in flight: ignored`);
      return;
    }
    this.#liveness.acked();
    if (!record.dup) this.#window.sample(now - record.sentAt, now, this.#flight.size - 1);
    const error = reasonCode >= 0x80
      ? new PublishRefusedError(record.topic, reasonCode, reasonString)
      : undefined;
    this.#finish(record, error, now, out);
  }

  /** A PUBREC arrived. */
  pubrec(
    id: number,
    reasonCode: number,
    reasonString: string | undefined,
    now: number,
    out: Actions,
  ): void {
    const ctx = this.#ctx;
    const record = this.accepted.get(id);
    if (record === undefined || record.qos !== 2 || !record.inFlight) {
      // Let the broker finish its side: a PUBREL for an id we do not know.
      out.log("warn", `PUBREC for packet ${id}, not in flight: answered with PUBREL`);
      ctx.emit(out, ackFrame("pubrel", id, ctx.config.protocolVersion, 0x92), false, now);
      return;
    }
    if (record.stage === RELEASED) {
      // A repeated PUBREC: our PUBREL may not have arrived.
      ctx.emit(out, ackFrame("pubrel", id, ctx.config.protocolVersion), false, now);
      return;
    }
    if (record.stage === RECEIVED) return; // its PUBREL waits for the store
    this.#liveness.acked();
    if (!record.dup) this.#window.sample(now - record.sentAt, now, this.#flight.size);
    if (reasonCode >= 0x80) {
      this.#finish(
        record,
        new PublishRefusedError(record.topic, reasonCode, reasonString),
        now,
        out,
      );
      return;
    }
    record.stage = RECEIVED;
    if (ctx.config.durable) {
      record.relSeq = ctx.nextSeq();
      out.storeOps.push({ op: "released", id });
    }
    this.#releases.push(record);
    this.#releaseDurable(now, out);
  }

  /** Writes PUBREL for every QoS 2 publish in flight whose PUBREC is durable. */
  #releaseDurable(now: number, out: Actions): void {
    const ctx = this.#ctx;
    const releases = this.#releases;
    if (ctx.phase !== UP || releases.length === 0) return;
    const waiting: OutgoingPublish[] = [];
    for (let r = releases.shift(); r !== undefined; r = releases.shift()) {
      if (r.stage !== RECEIVED) continue; // finished, restarted, or released by a re-send
      if (r.relSeq > ctx.durableSeq) {
        // Durability comes in order: the rest waits too.
        waiting.push(r, ...releases.takeAll());
        break;
      }
      if (!r.inFlight) {
        waiting.push(r); // a deferred re-send: its PUBREL goes when it gets a slot
        continue;
      }
      r.stage = RELEASED;
      r.sentAt = now;
      ctx.emit(out, ackFrame("pubrel", r.id, ctx.config.protocolVersion), false, now);
    }
    for (const r of waiting) releases.push(r);
  }

  /** A PUBCOMP arrived. */
  pubcomp(id: number, reasonCode: number, now: number, out: Actions): void {
    const record = this.accepted.get(id);
    if (record === undefined || record.stage !== RELEASED || !record.inFlight) {
      out.log("warn", `PUBCOMP for packet ${id}, not awaiting one: ignored`);
      return;
    }
    this.#liveness.acked();
    if (reasonCode >= 0x80) {
      out.log("warn", `PUBCOMP for packet ${id} with reason 0x${reasonCode.toString(16)}`);
    }
    this.#finish(record, undefined, now, out);
  }

  /** The store caught up to `ctx.durableSeq`: write what waited for it. */
  durable(now: number, out: Actions): void {
    this.#releaseDurable(now, out);
    this.pump(now, out);
  }

  /** `record`'s exchange is over: forget it, answer its caller, let others in. */
  #finish(record: OutgoingPublish, error: Error | undefined, now: number, out: Actions): void {
    this.#land(record);
    this.#forget(record, out);
    if (!record.settled) {
      record.settled = true;
      if (error) out.reject(record, error);
      else out.resolve(record, undefined);
    }
    this.#roomAppeared(now, out);
  }

  /** Drops `record` from the accepted list and the store; its id is free again. */
  #forget(record: OutgoingPublish, out: Actions): void {
    this.accepted.remove(record);
    if (this.#ctx.config.durable) out.storeOps.push({ op: "delete", id: record.id });
  }

  /**
   * Room in the window or a free id: accept waiting calls; once the window
   * is down to its refill level, answer streaming callers and write more.
   */
  #roomAppeared(now: number, out: Actions): void {
    const refill = this.#flight.size <= this.#window.refillLevel;
    const waiters = this.#roomWaiters;
    if (refill && waiters.length > 0) {
      this.#roomWaiters = [];
      for (const record of waiters) {
        if (record.settled) continue;
        record.settled = true;
        out.resolve(record, undefined);
      }
    }
    while (this.#unaccepted.length > 0 && this.#accept(this.#unaccepted.peek()!, out)) {
      this.#unaccepted.shift();
    }
    if (refill) this.pump(now, out);
  }

  // ---- deadlines and the end ------------------------------------------------------

  /** The oldest written publish (or PUBREL) still unanswered. */
  oldestUnanswered(): OutgoingPublish | undefined {
    for (let r = this.#flight.head; r !== undefined; r = r.flightNext) {
      if (r.stage !== RECEIVED) return r; // RECEIVED waits for our store, not the broker
    }
    return undefined;
  }

  /** A short account of the accepted publishes, for traces: `id:qos:stage[*in flight][d]`. */
  describe(limit = 12): string {
    const stages = ["queued", "sent", "received", "released"];
    const parts: string[] = [];
    for (let r = this.accepted.head; r !== undefined && parts.length < limit; r = r.next) {
      parts.push(`${r.id}:${r.qos}:${stages[r.stage]}${r.inFlight ? "*" : ""}${r.dup ? "d" : ""}`);
    }
    return `${this.accepted.size} accepted [${parts.join(" ")}], ${this.#flight.size} in flight, ` +
      `${this.#resends.length} re-sends waiting, ${this.#queue.length} queued, ${this.#releases.length} releases waiting`;
  }

  /** Every caller still waiting, removed (the client is shutting down). Records stay in the store. */
  takeCallers(): OutgoingPublish[] {
    const all = [
      ...this.#unaccepted.takeAll(),
      ...this.#queue.takeAll().filter((r) => r.qos === 0),
    ];
    for (const r of this.accepted.takeAll()) all.push(r);
    this.#resends.takeAll();
    this.#flight.clear();
    this.#roomWaiters = [];
    this.inflightQos2 = 0;
    return all.filter((r) => !r.settled);
  }
}
