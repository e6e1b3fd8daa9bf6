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
import { ackFrame, publishFrame } from "./_frames.ts";
import type { Liveness } from "./_liveness.ts";
import type { AdaptiveWindow } from "./_window.ts";
import {
  Fifo,
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
  /** Publishes not written yet, all QoS, in call order. */
  readonly #queue = new Fifo<OutgoingPublish>();
  /** QoS 1/2 calls waiting for a free packet id (all 65 535 in use). */
  readonly #unaccepted = new Fifo<OutgoingPublish>();
  /** Streaming publishes written, waiting for room in the window to answer their caller. */
  #roomWaiters: OutgoingPublish[] = [];
  /** QoS 2 publishes whose PUBREC is durable-pending, in order. */
  readonly #releases = new Fifo<OutgoingPublish>();
  /** Written and not finished (SENT, RECEIVED, RELEASED). */
  inflight = 0;
  /** Of those, QoS 2. */
  inflightQos2 = 0;

  /** Outgoing state sharing `ctx`, timing and the window. */
  constructor(ctx: Context, liveness: Liveness, window: AdaptiveWindow) {
    this.#ctx = ctx;
    this.#liveness = liveness;
    this.#window = window;
  }

  /** Publishes not yet written, including those waiting for an id. */
  get queued(): number {
    return this.#queue.length + this.#unaccepted.length;
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

  /** A publish restored from the store: in flight as far as the broker may know. */
  restore(record: OutgoingPublish, released: boolean): void {
    record.dup = true;
    record.stage = released ? RECEIVED : SENT;
    this.accepted.append(record);
    this.inflight++;
    if (record.qos === 2) this.inflightQos2++;
    if (released) this.#releases.push(record);
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
    if (record.stage !== QUEUED) return;
    if (this.#unaccepted.remove(record)) return;
    this.#queue.remove(record);
    if (record.qos > 0) this.#forget(record, out);
  }

  // ---- writing ---------------------------------------------------------------

  /** Whether `record` fits the window now. */
  #hasRoom(record: OutgoingPublish): boolean {
    if (this.inflight >= this.#window.size) return false;
    return record.qos !== 2 || this.#ctx.config.protocolVersion === 5 ||
      this.inflightQos2 < this.#ctx.config.maxInflightQos2;
  }

  /** Writes queued publishes in order while the link, the window, the socket and the store allow. */
  pump(now: number, out: Actions): void {
    const ctx = this.#ctx;
    if (ctx.phase !== UP || ctx.closing) return;
    const queue = this.#queue;
    for (let record = queue.peek(); record !== undefined; record = queue.peek()) {
      if (!ctx.writable()) return;
      if (record.qos === 0) {
        queue.shift();
        if (this.#refusedByBroker(record, now, out)) continue;
        ctx.emit(out, publishFrame(record, ctx.config.protocolVersion, false), false, now);
        if (!record.settled) {
          record.settled = true;
          out.resolve(record, undefined);
        }
        continue;
      }
      if (record.seq > ctx.durableSeq) return; // its store record is not durable yet
      if (!this.#hasRoom(record)) {
        this.#window.limited = true;
        return;
      }
      queue.shift();
      if (this.#refusedByBroker(record, now, out)) {
        this.#forget(record, out);
        continue;
      }
      record.stage = SENT;
      record.sentAt = now;
      this.inflight++;
      if (record.qos === 2) this.inflightQos2++;
      this.#window.limited = this.inflight >= this.#window.size;
      // A sync caller waits for the answer: no macrotask's delay. A stream's
      // publishes wait for the macrotask, to share one write.
      ctx.emit(out, publishFrame(record, ctx.config.protocolVersion, false), record.sync, now);
      if (!record.sync && !record.settled) {
        if (this.#hasRoom(record)) {
          record.settled = true;
          out.resolve(record, undefined);
        } else {
          this.#roomWaiters.push(record);
        }
      }
    }
  }

  /** A publish the current broker cannot take (v5 limits): rejected, not sent. */
  #refusedByBroker(record: OutgoingPublish, _now: number, out: Actions): boolean {
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
   * A fresh connection is up: re-send what the broker may not have, in
   * order, before anything new. `republish`: the broker lost the session,
   * so QoS 2 exchanges past PUBREC start over with the PUBLISH (the broker
   * may have lost the message; at least once beats a loss).
   */
  resend(now: number, out: Actions, republish: boolean): number {
    const ctx = this.#ctx;
    const version = ctx.config.protocolVersion;
    let count = 0;
    for (let r = this.accepted.head; r !== undefined && r.stage !== QUEUED; r = r.next) {
      if (republish && (r.stage === RECEIVED || r.stage === RELEASED)) r.stage = SENT;
      if (r.stage === SENT) {
        r.dup = true;
        ctx.emit(out, publishFrame(r, version, true), false, now);
      } else if (r.stage === RELEASED) {
        ctx.emit(out, ackFrame("pubrel", r.id, version), false, now);
      } else {
        continue; // RECEIVED: its PUBREL waits for the store
      }
      r.sentAt = now;
      count++;
    }
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
    if (!record.dup) this.#window.sample(now - record.sentAt, now);
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
    if (record === undefined || record.qos !== 2 || record.stage === QUEUED) {
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
    if (!record.dup) this.#window.sample(now - record.sentAt, now);
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

  /** Writes PUBREL for every QoS 2 publish whose PUBREC is durable. */
  #releaseDurable(now: number, out: Actions): void {
    const ctx = this.#ctx;
    if (ctx.phase !== UP) return;
    const releases = this.#releases;
    for (let r = releases.peek(); r !== undefined; r = releases.peek()) {
      if (r.relSeq > ctx.durableSeq) return;
      releases.shift();
      if (r.stage !== RECEIVED) continue; // finished or restarted meanwhile
      r.stage = RELEASED;
      r.sentAt = now;
      ctx.emit(out, ackFrame("pubrel", r.id, ctx.config.protocolVersion), false, now);
    }
  }

  /** A PUBCOMP arrived. */
  pubcomp(id: number, reasonCode: number, now: number, out: Actions): void {
    const record = this.accepted.get(id);
    if (record === undefined || record.stage !== RELEASED) {
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
    this.inflight--;
    if (record.qos === 2) this.inflightQos2--;
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

  /** Room in the window or a free id: answer streaming callers, accept waiting ones, write more. */
  #roomAppeared(now: number, out: Actions): void {
    const waiters = this.#roomWaiters;
    if (waiters.length > 0 && this.inflight < this.#window.size) {
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
    this.pump(now, out);
  }

  // ---- deadlines and the end ------------------------------------------------------

  /** The oldest written publish (or PUBREL) still unanswered. */
  oldestUnanswered(): OutgoingPublish | undefined {
    for (let r = this.accepted.head; r !== undefined; r = r.next) {
      if (r.stage === SENT || r.stage === RELEASED) return r;
      if (r.stage === QUEUED) return undefined;
    }
    return undefined;
  }

  /** Every caller still waiting, removed (the client is shutting down). Records stay in the store. */
  takeCallers(): OutgoingPublish[] {
    const all = [
      ...this.#unaccepted.takeAll(),
      ...this.#queue.takeAll().filter((r) => r.qos === 0),
    ];
    for (const r of this.accepted.takeAll()) all.push(r);
    this.#roomWaiters = [];
    this.inflight = 0;
    this.inflightQos2 = 0;
    return all.filter((r) => !r.settled);
  }
}
