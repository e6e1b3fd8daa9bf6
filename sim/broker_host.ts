/**
 * A simulated broker: the test broker's core ({@linkcode BrokerCore}) on the
 * simulated network, with faults the schedule switches on and off:
 * withheld, slow and duplicated acknowledgements, refused CONNECTs,
 * malformed bytes, a first packet other than CONNACK, restarts with and
 * without persistence. It records every frame both ways for the
 * invariants.
 *
 * @module
 */

import { PacketDecoder } from "../codec/decode.ts";
import { encode } from "../codec/encode.ts";
import type { Packet, ProtocolVersion, PublishPacket } from "../codec/packets.ts";
import { BrokerCore, type BrokerCoreOptions, type BrokerOutput } from "../testing/_broker_core.ts";
import type { SimConnection } from "./network.ts";
import type { Rng } from "./rng.ts";
import type { Scheduler, SimEvent } from "./scheduler.ts";

/** A frame that crossed a simulated connection. */
export interface WireFrame {
  /** Virtual time the frame was read by its receiver. */
  at: number;
  /** The connection's id. */
  connection: number;
  /** Direction. */
  toBroker: boolean;
  /** The decoded packet. */
  packet: Packet;
}

/** Acknowledgement faults, switched on by the schedule. */
export interface AckFaults {
  /** Acknowledgements to the client are dropped (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP). */
  withhold: boolean;
  /** Extra delay before acknowledgements go out, ms. */
  delayMs: number;
  /** Every acknowledgement is sent twice. */
  duplicate: boolean;
}

const ACKS = new Set(["puback", "pubrec", "pubcomp", "suback", "unsuback", "pingresp", "pubrel"]);

interface Link {
  conn: SimConnection;
  decoder: PacketDecoder;
  version: ProtocolVersion;
}

/** See the module doc. */
export class SimBroker {
  readonly core: BrokerCore;
  readonly frames: WireFrame[] = [];
  /** Told of every frame the broker read or wrote (the trace). */
  onFrame: ((frame: WireFrame) => void) | undefined;
  readonly faults: AckFaults = { withhold: false, delayMs: 0, duplicate: false };
  /** CONNACK refusals still to give (code, count). */
  refuse: { code: number; count: number } | undefined;
  /** Send malformed bytes right after the next CONNACK. */
  garbageAfterConnack = false;
  /** Answer the next CONNECT with a PUBACK instead of a CONNACK. */
  wrongFirstPacket = false;
  /** Counted: connections accepted, restarts. */
  accepted = 0;
  restarts = 0;
  readonly #links = new Map<number, Link>();
  #tick: SimEvent | undefined;
  readonly #out: BrokerOutput;

  constructor(
    readonly sched: Scheduler,
    readonly rng: Rng,
    readonly name: string,
    options: BrokerCoreOptions,
  ) {
    this.core = new BrokerCore(options);
    this.#out = {
      send: (id, packet) => this.#send(id, packet),
      close: (id) => this.#close(id),
    };
  }

  /** The network hands over a new connection. */
  accept(conn: SimConnection): boolean {
    this.accepted++;
    const link: Link = { conn, decoder: new PacketDecoder({ protocolVersion: 4 }), version: 4 };
    this.#links.set(conn.id, link);
    this.core.accept(conn.id, this.sched.now);
    conn.onBrokerData = (chunk) => this.#data(link, chunk);
    conn.onBrokerEnd = () => this.#ended(link);
    this.#arm();
    return true;
  }

  /** Publishes a message into the broker, as another client would. */
  inject(message: PublishPacket): void {
    this.core.inject(message, this.#out);
    this.#arm();
  }

  /** Restarts: every connection is cut; sessions survive only with `persistence`. */
  restart(persistence: boolean): void {
    this.restarts++;
    for (const link of [...this.#links.values()]) link.conn.cut();
    this.#links.clear();
    this.core.restart(persistence, this.sched.now);
    this.#arm();
  }

  #data(link: Link, chunk: Uint8Array): void {
    try {
      link.decoder.push(chunk, (packet) => {
        if (packet.cmd === "connect") {
          link.version = packet.protocolVersion;
          link.decoder.protocolVersion = packet.protocolVersion;
        }
        this.#record({ at: this.sched.now, connection: link.conn.id, toBroker: true, packet });
        this.#receive(link, packet);
      });
    } catch (error) {
      // A malformed frame from the client: a broker closes the connection.
      this.frames.push({
        at: this.sched.now,
        connection: link.conn.id,
        toBroker: true,
        packet: {
          cmd: "disconnect",
          reasonCode: 0x81,
          properties: { reasonString: String(error) },
        },
      });
      this.#close(link.conn.id);
      this.core.disconnected(link.conn.id, this.sched.now, this.#out);
    }
    this.#arm();
  }

  #receive(link: Link, packet: Packet): void {
    if (packet.cmd === "connect") {
      if (this.wrongFirstPacket) {
        this.wrongFirstPacket = false;
        this.#write(link, { cmd: "puback", messageId: 1 });
        return;
      }
      if (this.refuse !== undefined && this.refuse.count > 0) {
        this.refuse.count--;
        const v5 = packet.protocolVersion === 5;
        this.#write(
          link,
          v5
            ? {
              cmd: "connack",
              sessionPresent: false,
              reasonCode: this.refuse.code === 5 ? 0x87 : 0x88,
            }
            : { cmd: "connack", sessionPresent: false, returnCode: this.refuse.code },
        );
        this.#close(link.conn.id);
        return;
      }
    }
    this.core.receive(link.conn.id, packet, this.sched.now, this.#out);
  }

  #record(frame: WireFrame): void {
    this.frames.push(frame);
    this.onFrame?.(frame);
  }

  #ended(link: Link): void {
    this.#links.delete(link.conn.id);
    this.core.disconnected(link.conn.id, this.sched.now, this.#out);
    this.#arm();
  }

  #send(id: number, packet: Packet): void {
    const link = this.#links.get(id);
    if (link === undefined) return;
    if (ACKS.has(packet.cmd)) {
      const f = this.faults;
      if (f.withhold && packet.cmd !== "pingresp") return;
      const copies = f.duplicate ? 2 : 1;
      for (let i = 0; i < copies; i++) {
        if (f.delayMs > 0) this.sched.after(f.delayMs, () => this.#write(link, packet), "broker");
        else this.#write(link, packet);
      }
      return;
    }
    this.#write(link, packet);
    if (packet.cmd === "connack" && this.garbageAfterConnack) {
      this.garbageAfterConnack = false;
      link.conn.brokerWrite(new Uint8Array([0x00, 0x00])); // packet type 0 is reserved in 3.1.1 and 5
    }
  }

  #write(link: Link, packet: Packet): void {
    if (link.conn.brokerClosed) return;
    this.#record({ at: this.sched.now, connection: link.conn.id, toBroker: false, packet });
    link.conn.brokerWrite(encode(packet, link.version));
  }

  #close(id: number): void {
    const link = this.#links.get(id);
    if (link === undefined) return;
    this.#links.delete(id);
    link.conn.brokerClose();
  }

  /** Keeps the core's timer (keepalive, wills, expiry) as one scheduled event. */
  #arm(): void {
    const at = this.core.nextDeadline();
    if (this.#tick !== undefined && this.#tick.at <= at && !this.#tick.cancelled) return;
    this.sched.cancel(this.#tick);
    this.#tick = undefined;
    if (at === Infinity) return;
    this.#tick = this.sched.at(at, () => {
      this.#tick = undefined;
      this.core.tick(this.sched.now, this.#out);
      this.#arm();
    }, "broker");
  }
}
