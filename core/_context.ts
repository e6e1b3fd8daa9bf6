/**
 * What the parts of the session state share: settings, the connection's
 * phase and limits, packet ids, the store's sequence numbers and the one way
 * frames are written.
 *
 * @module
 */

import type {
  ConnectProperties,
  ProtocolVersion,
  UserProperties,
  WillMessage,
} from "../codec/packets.ts";
import type { Actions } from "./actions.ts";

/** Settings of one session, in protocol units (ms for times). */
export interface SessionConfig {
  /** 4 (3.1.1) or 5. */
  protocolVersion: ProtocolVersion;
  /** Client identifier. */
  clientId: string;
  /** Keepalive, seconds (0: none). */
  keepalive: number;
  /** How long the broker gets to answer, ms. */
  responseTimeMs: number;
  /** `clean: true`: a clean slate on the first connect only. */
  clean: boolean;
  /** User name. */
  username?: string;
  /** Password. */
  password?: Uint8Array;
  /** Last will. */
  will?: WillMessage;
  /** Ceiling of the in-flight window. */
  maxInflight: number;
  /** 3.1.1: QoS 2 publishes that may await PUBCOMP at once (the broker cannot say). */
  maxInflightQos2: number;
  /** Bytes written but not yet flushed above which new writes wait. */
  highWaterMark: number;
  /** v5: session expiry interval, seconds. */
  sessionExpiry: number;
  /** v5: CONNECT properties besides session expiry (user properties, limits, auth). */
  connectProperties?: ConnectProperties;
  /** A store is attached: changes to the session are emitted for it. */
  durable: boolean;
  /** The store needs time to make changes durable: what depends on them waits. */
  gated: boolean;
}

/** The connection's phase. */
export const DOWN = 0;
/** CONNECT written, CONNACK awaited. */
export const CONNECTING = 1;
/** CONNACK accepted. */
export const UP = 2;

/** The limits a v5 broker announced in its CONNACK (3.1.1: none). */
export interface BrokerLimits {
  /** Receive Maximum: QoS 1/2 publishes it accepts un-acknowledged. */
  receiveMaximum: number;
  /** Maximum Packet Size it accepts, bytes. */
  maximumPacketSize: number;
  /** Topic Alias Maximum: aliases it accepts from us. */
  topicAliasMaximum: number;
  /** Maximum QoS it accepts. */
  maximumQoS: 0 | 1 | 2;
  /** Whether it accepts retained messages. */
  retainAvailable: boolean;
}

/** No limits beyond MQTT's own. */
export const NO_LIMITS: Readonly<BrokerLimits> = {
  receiveMaximum: 65_535,
  maximumPacketSize: 268_435_460,
  topicAliasMaximum: 0,
  maximumQoS: 2,
  retainAvailable: true,
};

/** The shared services the parts of the state use. */
export interface Context {
  readonly config: SessionConfig;
  /** The connection's phase: DOWN, CONNECTING or UP. */
  readonly phase: number;
  /** Incremented with every new connection. */
  readonly epoch: number;
  /** The current connection's broker limits. */
  readonly limits: BrokerLimits;
  /** disconnect() was called: nothing new goes out. */
  readonly closing: boolean;
  /** Whether frames may be written now (not backed up). */
  writable(): boolean;
  /** Writes a frame on the current connection (counts as the client speaking). */
  emit(out: Actions, frame: Uint8Array, urgent: boolean, now: number): void;
  /** The next free packet id, or 0 when all 65 535 are in use. */
  nextId(): number;
  /** A new store sequence number (the change it numbers is emitted by the caller). */
  nextSeq(): number;
  /** The highest store sequence known durable. */
  readonly durableSeq: number;
}

/** User properties from a record or pairs, as pairs. */
export type UserPropertiesInput = UserProperties | Record<string, string>;
