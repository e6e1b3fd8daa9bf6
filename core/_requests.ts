/**
 * SUBSCRIBE and UNSUBSCRIBE: the queue, the requests awaiting their answer,
 * what the answer means (granted QoS, refusal codes), and the subscriptions
 * the client holds, which it restores when a broker has lost its session.
 *
 * @module
 */

import type { SubackPacket, Subscription, UnsubackPacket } from "../codec/packets.ts";
import { SubscriptionRefusedError, UnsubscribeRefusedError } from "../errors.ts";
import type { Actions } from "./actions.ts";
import { type Context, UP } from "./_context.ts";
import { packetFrame } from "./_frames.ts";
import { Fifo, Request } from "./records.ts";

/** Subscription state of one session; see the module doc. */
export class Requests {
  readonly #ctx: Context;
  readonly #queue = new Fifo<Request>();
  /** Written, awaiting SUBACK/UNSUBACK, by packet id in send order. */
  readonly pending = new Map<number, Request>();
  /** Subscriptions the broker granted, by filter, with the options and properties they had. */
  readonly held = new Map<
    string,
    { subscription: Subscription; properties: Request["properties"] }
  >();

  /** Request state sharing `ctx`. */
  constructor(ctx: Context) {
    this.#ctx = ctx;
  }

  /** Requests not written yet. */
  get queued(): number {
    return this.#queue.length;
  }

  /** A subscribe or unsubscribe call. */
  add(request: Request, now: number, out: Actions): void {
    this.#queue.push(request);
    this.pump(now, out);
  }

  /** The caller stopped waiting: withdrawn if not written yet, else only answered. */
  abort(request: Request, reason: Error, out: Actions): void {
    if (request.settled) return;
    request.settled = true;
    out.reject(request, reason);
    if (!request.sent) this.#queue.remove(request);
  }

  /** Writes queued requests while the link is up and ids are free. */
  pump(now: number, out: Actions): void {
    const ctx = this.#ctx;
    if (ctx.phase !== UP || ctx.closing) return;
    while (this.#queue.length > 0 && ctx.writable()) {
      const request = this.#queue.peek()!;
      const id = ctx.nextId();
      if (id === 0) return;
      this.#queue.shift();
      request.id = id;
      this.#write(request, now, out);
    }
  }

  #write(request: Request, now: number, out: Actions): void {
    const ctx = this.#ctx;
    request.sent = true;
    request.sentAt = now;
    this.pending.set(request.id, request);
    const properties = ctx.config.protocolVersion === 5 ? request.properties : undefined;
    const frame = request.kind === "subscribe"
      ? packetFrame({
        cmd: "subscribe",
        messageId: request.id,
        subscriptions: [...request.subscriptions],
        ...(properties ? { properties } : {}),
      }, ctx.config.protocolVersion)
      : packetFrame({
        cmd: "unsubscribe",
        messageId: request.id,
        unsubscriptions: request.subscriptions.map((s) => s.topic),
        ...(properties?.userProperties
          ? { properties: { userProperties: properties.userProperties } }
          : {}),
      }, ctx.config.protocolVersion);
    ctx.emit(out, frame, true, now);
  }

  /**
   * A fresh connection is up. `sessionLost`: the broker has no session, so
   * every held subscription is made again first. Then requests still
   * unanswered are re-sent with their ids.
   */
  resend(now: number, out: Actions, sessionLost: boolean): number {
    const unanswered = [...this.pending.values()];
    let count = 0;
    if (sessionLost) {
      for (const { subscription, properties } of this.held.values()) {
        const id = this.#ctx.nextId();
        if (id === 0) break;
        const request = new Request("subscribe", [subscription], properties);
        request.settled = true; // nobody waits: the answer only updates what is held
        request.id = id;
        this.#write(request, now, out);
        count++;
      }
    }
    for (const request of unanswered) {
      this.pending.delete(request.id); // back in, after the re-subscriptions
      this.#write(request, now, out);
      count++;
    }
    return count;
  }

  /** A SUBACK arrived. */
  suback(packet: SubackPacket, now: number, out: Actions): void {
    const request = this.#answered(packet.messageId, "subscribe", out);
    if (!request) return;
    const version = this.#ctx.config.protocolVersion;
    let refused: SubscriptionRefusedError | undefined;
    request.subscriptions.forEach((subscription, i) => {
      const code = packet.granted[i] ?? 0x80;
      if (code < 0x80) {
        this.held.set(subscription.topic, { subscription, properties: request.properties });
      } else {
        this.held.delete(subscription.topic);
        refused ??= new SubscriptionRefusedError(subscription.topic, code, version);
        if (request.settled) out.log("error", refused.message);
      }
    });
    if (!request.settled) {
      request.settled = true;
      if (refused) out.reject(request, refused);
      else out.resolve(request, packet.granted[0]);
    }
    this.pump(now, out);
  }

  /** An UNSUBACK arrived. */
  unsuback(packet: UnsubackPacket, now: number, out: Actions): void {
    const request = this.#answered(packet.messageId, "unsubscribe", out);
    if (!request) return;
    let refused: UnsubscribeRefusedError | undefined;
    request.subscriptions.forEach(({ topic }, i) => {
      const code = packet.granted[i] ?? 0;
      if (code >= 0x80) refused ??= new UnsubscribeRefusedError(topic, code);
      else this.held.delete(topic);
    });
    if (!request.settled) {
      request.settled = true;
      if (refused) out.reject(request, refused);
      else out.resolve(request, undefined);
    }
    this.pump(now, out);
  }

  /**
   * The request an answer belongs to. A stray answer (a broker that repeats
   * one, or answers a request from an earlier connection late) is logged
   * and ignored, like a stray PUBACK: closing would only cost a reconnect.
   */
  #answered(id: number, kind: Request["kind"], out: Actions): Request | undefined {
    const request = this.pending.get(id);
    if (request === undefined || request.kind !== kind) {
      const name = kind === "subscribe" ? "SUBACK" : "UNSUBACK";
      out.log("warn", `${name} for packet ${id}, not awaited: ignored`);
      return undefined;
    }
    this.pending.delete(id);
    return request;
  }

  /** The oldest written request still unanswered. */
  oldest(): Request | undefined {
    for (const request of this.pending.values()) return request;
    return undefined;
  }

  /** Every caller still waiting, removed (the client is shutting down). */
  takeCallers(): Request[] {
    const all = [...this.#queue.takeAll(), ...this.pending.values()];
    this.pending.clear();
    return all.filter((r) => !r.settled);
  }
}
