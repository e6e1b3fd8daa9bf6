/**
 * The MQTT packets of 3.1.1 (protocol level 4) and 5, as plain objects.
 *
 * Field names follow `mqtt-packet` where it has one (`messageId`,
 * `returnCode` for a 3.1.1 CONNACK, `reasonCode` for 5, `granted` for SUBACK
 * and v5 UNSUBACK codes, `unsubscriptions`, `nl`/`rap`/`rh`), so scripts
 * written for it read the same. Two deliberate differences: binary fields are
 * `Uint8Array` (no Node Buffer), and user properties are ordered pairs, since
 * MQTT 5 keeps their order and allows a name more than once (MQTT-3.3.2-18).
 *
 * @module
 */

/** MQTT's protocol level: 4 is 3.1.1, 5 is MQTT 5. */
export type ProtocolVersion = 4 | 5;

/** Quality of service. */
export type QoS = 0 | 1 | 2;

/** User properties: name/value pairs in wire order; a name may repeat. */
export type UserProperties = [name: string, value: string][];

/** Properties a CONNECT may carry (v5). */
export interface ConnectProperties {
  /** 0x11, seconds. */
  sessionExpiryInterval?: number;
  /** 0x21, 1..65535. */
  receiveMaximum?: number;
  /** 0x27, 1..2^32-1. */
  maximumPacketSize?: number;
  /** 0x22. */
  topicAliasMaximum?: number;
  /** 0x19. */
  requestResponseInformation?: boolean;
  /** 0x17. */
  requestProblemInformation?: boolean;
  /** 0x26. */
  userProperties?: UserProperties;
  /** 0x15. */
  authenticationMethod?: string;
  /** 0x16. */
  authenticationData?: Uint8Array;
}

/** Properties of a will message (v5). */
export interface WillProperties {
  /** 0x18, seconds. */
  willDelayInterval?: number;
  /** 0x01: true when the payload is UTF-8. */
  payloadFormatIndicator?: boolean;
  /** 0x02, seconds. */
  messageExpiryInterval?: number;
  /** 0x03. */
  contentType?: string;
  /** 0x08. */
  responseTopic?: string;
  /** 0x09. */
  correlationData?: Uint8Array;
  /** 0x26. */
  userProperties?: UserProperties;
}

/** The will in a CONNECT. */
export interface WillMessage {
  /** Topic name. */
  topic: string;
  /** Payload bytes. */
  payload: Uint8Array;
  /** Will QoS. */
  qos: QoS;
  /** Will retain flag. */
  retain: boolean;
  /** v5 only. */
  properties?: WillProperties;
}

/** CONNECT (client to server). */
export interface ConnectPacket {
  /** Packet type. */
  cmd: "connect";
  /** Protocol level: 4 or 5. */
  protocolVersion: ProtocolVersion;
  /** Always "MQTT" for levels 4 and 5. */
  protocolId?: "MQTT";
  /** Client identifier; may be empty. */
  clientId: string;
  /** CleanSession (3.1.1) or Clean Start (5). */
  clean: boolean;
  /** Keepalive, seconds. */
  keepalive: number;
  /** User name. */
  username?: string;
  /** Password bytes. */
  password?: Uint8Array;
  /** Last will. */
  will?: WillMessage;
  /** v5 only. */
  properties?: ConnectProperties;
}

/** Properties a CONNACK may carry (v5). */
export interface ConnackProperties {
  /** 0x11, seconds the server keeps the session. */
  sessionExpiryInterval?: number;
  /** 0x21, 1..65535 unacknowledged QoS 1/2 publishes the server accepts. */
  receiveMaximum?: number;
  /** 0x24, highest QoS the server supports (absent: 2). */
  maximumQoS?: 0 | 1;
  /** 0x25. */
  retainAvailable?: boolean;
  /** 0x27, 1..2^32-1 bytes. */
  maximumPacketSize?: number;
  /** 0x12, when the client sent an empty one. */
  assignedClientIdentifier?: string;
  /** 0x22. */
  topicAliasMaximum?: number;
  /** 0x1F. */
  reasonString?: string;
  /** 0x26. */
  userProperties?: UserProperties;
  /** 0x28. */
  wildcardSubscriptionAvailable?: boolean;
  /** 0x29. */
  subscriptionIdentifiersAvailable?: boolean;
  /** 0x2A. */
  sharedSubscriptionAvailable?: boolean;
  /** 0x13, seconds; replaces the client's keep alive. */
  serverKeepAlive?: number;
  /** 0x1A. */
  responseInformation?: string;
  /** 0x1C. */
  serverReference?: string;
  /** 0x15. */
  authenticationMethod?: string;
  /** 0x16. */
  authenticationData?: Uint8Array;
}

/** CONNACK (server to client). */
export interface ConnackPacket {
  /** Packet type. */
  cmd: "connack";
  /** Session Present flag. */
  sessionPresent: boolean;
  /** 3.1.1 return code (0..5). Set for level 4. */
  returnCode?: number;
  /** v5 reason code. Set for level 5. */
  reasonCode?: number;
  /** v5 only. */
  properties?: ConnackProperties;
}

/** Properties a PUBLISH may carry (v5). */
export interface PublishProperties {
  /** 0x01: true when the payload is UTF-8. */
  payloadFormatIndicator?: boolean;
  /** 0x02, seconds. */
  messageExpiryInterval?: number;
  /** 0x23, 1..Topic Alias Maximum. */
  topicAlias?: number;
  /** 0x08. */
  responseTopic?: string;
  /** 0x09. */
  correlationData?: Uint8Array;
  /** 0x26. */
  userProperties?: UserProperties;
  /** 0x0B; server to client only, one per matching subscription. */
  subscriptionIdentifier?: number[];
  /** 0x03. */
  contentType?: string;
}

/** PUBLISH (both directions). */
export interface PublishPacket {
  /** Packet type. */
  cmd: "publish";
  /** Topic name; empty in v5 when a topic alias stands for it. */
  topic: string;
  /** Payload bytes. */
  payload: Uint8Array;
  /** QoS. */
  qos: QoS;
  /** Retain flag. */
  retain: boolean;
  /** DUP flag (0 for QoS 0). */
  dup: boolean;
  /** Packet identifier; present for QoS 1 and 2 only. */
  messageId?: number;
  /** v5 only. */
  properties?: PublishProperties;
}

/** Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK (v5). */
export interface AckProperties {
  /** 0x1F. */
  reasonString?: string;
  /** 0x26. */
  userProperties?: UserProperties;
}

/** PUBACK, PUBREC, PUBREL or PUBCOMP. */
export interface PubAckPacket {
  /** Packet type. */
  cmd: "puback" | "pubrec" | "pubrel" | "pubcomp";
  /** Packet identifier. */
  messageId: number;
  /** v5 reason code; absent (or 0) means success. */
  reasonCode?: number;
  /** v5 only. */
  properties?: AckProperties;
}

/** A PUBACK. */
export type PubackPacket = PubAckPacket & { cmd: "puback" };
/** A PUBREC. */
export type PubrecPacket = PubAckPacket & { cmd: "pubrec" };
/** A PUBREL. */
export type PubrelPacket = PubAckPacket & { cmd: "pubrel" };
/** A PUBCOMP. */
export type PubcompPacket = PubAckPacket & { cmd: "pubcomp" };

/** One topic filter in a SUBSCRIBE, with its options. */
export interface Subscription {
  /** Topic filter. */
  topic: string;
  /** Maximum QoS. */
  qos: QoS;
  /** v5 No Local. */
  nl?: boolean;
  /** v5 Retain As Published. */
  rap?: boolean;
  /** v5 Retain Handling, 0..2. */
  rh?: 0 | 1 | 2;
}

/** Properties a SUBSCRIBE may carry (v5). */
export interface SubscribeProperties {
  /** 0x0B, 1..268435455. */
  subscriptionIdentifier?: number;
  /** 0x26. */
  userProperties?: UserProperties;
}

/** SUBSCRIBE (client to server). */
export interface SubscribePacket {
  /** Packet type. */
  cmd: "subscribe";
  /** Packet identifier, 1..65535. */
  messageId: number;
  /** At least one. */
  subscriptions: Subscription[];
  /** v5 only. */
  properties?: SubscribeProperties;
}

/** SUBACK (server to client). */
export interface SubackPacket {
  /** Packet type. */
  cmd: "suback";
  /** Packet identifier, 1..65535. */
  messageId: number;
  /** One return (3.1.1) or reason (5) code per filter, in order. */
  granted: number[];
  /** v5 only. */
  properties?: AckProperties;
}

/** Properties an UNSUBSCRIBE may carry (v5). */
export interface UnsubscribeProperties {
  /** 0x26. */
  userProperties?: UserProperties;
}

/** UNSUBSCRIBE (client to server). */
export interface UnsubscribePacket {
  /** Packet type. */
  cmd: "unsubscribe";
  /** Packet identifier, 1..65535. */
  messageId: number;
  /** At least one topic filter. */
  unsubscriptions: string[];
  /** v5 only. */
  properties?: UnsubscribeProperties;
}

/** UNSUBACK (server to client). */
export interface UnsubackPacket {
  /** Packet type. */
  cmd: "unsuback";
  /** Packet identifier, 1..65535. */
  messageId: number;
  /** v5: one reason code per filter; empty for 3.1.1. */
  granted: number[];
  /** v5 only. */
  properties?: AckProperties;
}

/** PINGREQ. */
export interface PingreqPacket {
  /** Packet type. */
  cmd: "pingreq";
}

/** PINGRESP. */
export interface PingrespPacket {
  /** Packet type. */
  cmd: "pingresp";
}

/** Properties a DISCONNECT may carry (v5). */
export interface DisconnectProperties {
  /** 0x11 (client to server only). */
  sessionExpiryInterval?: number;
  /** 0x1F. */
  reasonString?: string;
  /** 0x26. */
  userProperties?: UserProperties;
  /** 0x1C (server to client). */
  serverReference?: string;
}

/** DISCONNECT (both directions in v5). */
export interface DisconnectPacket {
  /** Packet type. */
  cmd: "disconnect";
  /** v5 reason code; absent means 0 (normal disconnection). */
  reasonCode?: number;
  /** v5 only. */
  properties?: DisconnectProperties;
}

/** Properties of an AUTH packet (v5). */
export interface AuthProperties {
  /** 0x15. */
  authenticationMethod?: string;
  /** 0x16. */
  authenticationData?: Uint8Array;
  /** 0x1F. */
  reasonString?: string;
  /** 0x26. */
  userProperties?: UserProperties;
}

/** AUTH (v5 only). */
export interface AuthPacket {
  /** Packet type. */
  cmd: "auth";
  /** 0x00 success, 0x18 continue authentication, 0x19 re-authenticate. */
  reasonCode: number;
  /** v5 only. */
  properties?: AuthProperties;
}

/** Any MQTT packet. */
export type Packet =
  | ConnectPacket
  | ConnackPacket
  | PublishPacket
  | PubAckPacket
  | SubscribePacket
  | SubackPacket
  | UnsubscribePacket
  | UnsubackPacket
  | PingreqPacket
  | PingrespPacket
  | DisconnectPacket
  | AuthPacket;

/** The `cmd` of every packet type. */
export type PacketCmd = Packet["cmd"];

/** MQTT control packet type numbers (the fixed header's high nibble). */
export const PACKET_TYPE: Readonly<Record<PacketCmd, number>> = {
  connect: 1,
  connack: 2,
  publish: 3,
  puback: 4,
  pubrec: 5,
  pubrel: 6,
  pubcomp: 7,
  subscribe: 8,
  suback: 9,
  unsubscribe: 10,
  unsuback: 11,
  pingreq: 12,
  pingresp: 13,
  disconnect: 14,
  auth: 15,
};
