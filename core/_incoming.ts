/**
 * Incoming publishes: what to hand to the application, what acknowledgement
 * is owed and when, QoS 2 delivered exactly once, and v5 topic aliases.
 *
 * @module
 */

import type { PublishPacket } from "../codec/packets.ts";
import { ProtocolError } from "../errors.ts";
import type { Message } from "../messages.ts";
import type { Actions } from "./actions.ts";
import { type Context, UP } from "./_context.ts";
import { ackFrame } from "./_frames.ts";
import { toMessageProperties } from "./_properties.ts";

/** A QoS 2 message handed to the application whose PUBREC is not written yet. */
const DELIVERING = -1;

// A delivery ticket packs what the acknowledgement needs: the connection it
// came on (QoS 1 is acknowledged there or nowhere), the QoS and the packet id.
const EPOCH_UNIT = 0x40000;

/** Incoming side of one session; see the module doc. */
export class Incoming {
  readonly #ctx: Context;
  /**
   * QoS 2 packet ids the broker sent: DELIVERING while the application has
   * the message, then the store sequence of the record that makes the id
   * durable (0 without a store) until PUBREL.
   */
  readonly #qos2 = new Map<number, number>();
  /** Acknowledgements that wait for the store: [seq, "pubrec" | "pubcomp", id]. */
  readonly #gated: [number, "pubrec" | "pubcomp", number][] = [];
  /** v5 topic aliases the broker set on this connection. */
  #aliases = new Map<number, string>();
  /** v5: the largest alias we accept (our Topic Alias Maximum). */
  readonly #aliasMaximum: number;

  /** Incoming state sharing `ctx`. */
  constructor(ctx: Context) {
    this.#ctx = ctx;
    this.#aliasMaximum = ctx.config.connectProperties?.topicAliasMaximum ?? 0;
  }

  /** QoS 2 ids awaiting PUBREL (for inspection). */
  get pendingQos2(): number {
    return this.#qos2.size;
  }

  /** A new connection: aliases are per connection. */
  connecting(): void {
    if (this.#aliases.size > 0) this.#aliases = new Map();
  }

  /** The broker has no session for us: it will not send PUBREL for what it sent before. */
  sessionLost(out: Actions): void {
    for (const [id, state] of this.#qos2) {
      if (state === DELIVERING) continue; // its PUBREC still goes out; harmless
      this.#qos2.delete(id);
      if (this.#ctx.config.durable) {
        this.#ctx.nextSeq();
        out.storeOps.push({ op: "incomingDone", id });
      }
    }
  }

  /** An id restored from the store: delivered, PUBREL still owed by the broker. */
  restore(id: number): void {
    this.#qos2.set(id, 0);
  }

  /** A PUBLISH arrived: deliver it, or answer a re-send of one already delivered. */
  publish(packet: PublishPacket, now: number, out: Actions): void {
    const ctx = this.#ctx;
    let topic = packet.topic;
    const alias = packet.properties?.topicAlias;
    if (alias !== undefined) {
      if (alias === 0 || alias > this.#aliasMaximum) {
        out.close = new ProtocolError(
          `broker used topic alias ${alias}, outside our Topic Alias Maximum ${this.#aliasMaximum}`,
        );
        return;
      }
      if (topic.length > 0) {
        this.#aliases.set(alias, topic);
      } else {
        const known = this.#aliases.get(alias);
        if (known === undefined) {
          out.close = new ProtocolError(`broker used topic alias ${alias} before setting it`);
          return;
        }
        topic = known;
      }
    }
    const message: Message = {
      topic,
      payload: packet.payload,
      qos: packet.qos,
      retained: packet.retain,
      dup: packet.dup,
    };
    if (packet.properties !== undefined) {
      const properties = toMessageProperties(packet.properties);
      if (properties !== undefined) message.properties = properties;
    }
    const id = packet.messageId ?? 0;
    if (packet.qos === 0) {
      out.deliver(message, 0);
    } else if (packet.qos === 1) {
      out.deliver(message, ctx.epoch * EPOCH_UNIT + 0x10000 + id);
    } else {
      const state = this.#qos2.get(id);
      if (state === undefined) {
        this.#qos2.set(id, DELIVERING);
        out.deliver(message, ctx.epoch * EPOCH_UNIT + 0x20000 + id);
      } else if (state !== DELIVERING && state <= ctx.durableSeq) {
        // Delivered before: the broker missed our PUBREC.
        ctx.emit(out, ackFrame("pubrec", id, ctx.config.protocolVersion), false, now);
      }
    }
  }

  /** The application finished with the message of `ticket`: acknowledge it if still owed. */
  delivered(ticket: number, now: number, out: Actions): void {
    const ctx = this.#ctx;
    const id = ticket & 0xffff;
    const qos = (ticket >> 16) & 3;
    if (qos === 1) {
      // QoS 1 is acknowledged on the connection it came on, or not at all:
      // after a reconnect the broker re-sends it with DUP.
      if (Math.floor(ticket / EPOCH_UNIT) === ctx.epoch && ctx.phase === UP) {
        ctx.emit(out, ackFrame("puback", id, ctx.config.protocolVersion), false, now);
      }
      return;
    }
    if (this.#qos2.get(id) !== DELIVERING) return;
    let seq = 0;
    if (ctx.config.durable) {
      seq = ctx.nextSeq();
      out.storeOps.push({ op: "incoming", id });
    }
    this.#qos2.set(id, seq);
    this.#acknowledge("pubrec", id, seq, now, out);
  }

  /** A PUBREL arrived: the id is released; PUBCOMP once that is durable. */
  pubrel(id: number, now: number, out: Actions): void {
    const ctx = this.#ctx;
    const state = this.#qos2.get(id);
    if (state === DELIVERING) {
      out.close = new ProtocolError(`broker sent PUBREL for packet ${id} before our PUBREC`);
      return;
    }
    if (state === undefined) {
      // Already released (our PUBCOMP was lost), or never known: complete it.
      ctx.emit(out, ackFrame("pubcomp", id, ctx.config.protocolVersion, 0), false, now);
      return;
    }
    this.#qos2.delete(id);
    let seq = 0;
    if (ctx.config.durable) {
      seq = ctx.nextSeq();
      out.storeOps.push({ op: "incomingDone", id });
    }
    this.#acknowledge("pubcomp", id, seq, now, out);
  }

  #acknowledge(
    cmd: "pubrec" | "pubcomp",
    id: number,
    seq: number,
    now: number,
    out: Actions,
  ): void {
    const ctx = this.#ctx;
    if (seq <= ctx.durableSeq) {
      if (ctx.phase === UP) {
        ctx.emit(out, ackFrame(cmd, id, ctx.config.protocolVersion), false, now);
      }
    } else {
      this.#gated.push([seq, cmd, id]);
    }
  }

  /** The store caught up: write the acknowledgements that waited for it. */
  durable(now: number, out: Actions): void {
    const ctx = this.#ctx;
    let done = 0;
    for (const [seq, cmd, id] of this.#gated) {
      if (seq > ctx.durableSeq) break;
      done++;
      // Down meanwhile: the broker re-sends on the next connection and is answered then.
      if (ctx.phase === UP) {
        ctx.emit(out, ackFrame(cmd, id, ctx.config.protocolVersion), false, now);
      }
    }
    if (done > 0) this.#gated.splice(0, done);
  }
}
