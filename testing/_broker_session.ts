/**
 * One client's session inside the test broker: its subscriptions, the
 * messages in flight to it and queued for it, and the QoS 2 messages it
 * sent that wait for PUBREL.
 *
 * @module
 */

import type {
  ProtocolVersion,
  PublishPacket,
  PublishProperties,
  QoS,
  Subscription,
  WillMessage,
} from "../codec/packets.ts";

/** A subscription as the broker keeps it. */
export interface HeldSubscription extends Subscription {
  /** v5 subscription identifier. */
  identifier?: number;
}

/** A message on its way to one session. */
export interface OutboundMessage {
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  properties?: PublishProperties;
}

/** A QoS 1/2 message written to the client and not finished. */
export interface InflightOut {
  message: OutboundMessage;
  /** "publish": awaiting PUBACK/PUBREC; "pubrel": PUBREL sent, awaiting PUBCOMP. */
  stage: "publish" | "pubrel";
}

/** See the module doc. */
export class BrokerSession {
  /** The connection the client is on, when connected. */
  connection: number | undefined;
  /** Protocol level of the client's last CONNECT. */
  version: ProtocolVersion = 4;
  /** Seconds the session outlives its connection (Infinity: forever; 0: not at all). */
  expiry = 0;
  /** When a disconnected session is dropped. */
  expiresAt = Infinity;
  readonly subscriptions = new Map<string, HeldSubscription>();
  /** Messages written to the client, by packet id, in send order. */
  readonly inflight = new Map<number, InflightOut>();
  /** Messages waiting for the client's window or for it to connect. */
  readonly queue: OutboundMessage[] = [];
  /** QoS 2 messages from the client awaiting its PUBREL (method A: released then). */
  readonly incoming = new Map<number, PublishPacket | "dropped">();
  /** The will of the current connection. */
  will: WillMessage | undefined;
  /** v5: when a delayed will is due (Infinity: none pending). */
  willAt = Infinity;
  /** The client's limits (v5 CONNECT): messages in flight to it, largest packet, aliases. */
  receiveMaximum = 65_535;
  maximumPacketSize = Infinity;
  topicAliasMaximum = 0;
  /** Outgoing topic aliases on the current connection. */
  aliases = new Map<string, number>();
  #nextId = 1;

  /** A session for `clientId`. */
  constructor(readonly clientId: string) {}

  /** Whether it survives its connection. */
  get persistent(): boolean {
    return this.expiry > 0;
  }

  /** A packet id not in flight to the client. */
  nextId(): number {
    let id = this.#nextId;
    while (this.inflight.has(id)) id = id % 65_535 + 1;
    this.#nextId = id % 65_535 + 1;
    return id;
  }
}
