/**
 * The packet types of the fake broker: the codec's own (`codec/packets.ts`)
 * under the names tests have always used, and {@linkcode SendablePacket},
 * the looser shape a test may write.
 *
 * @module
 */

import type {
  AuthPacket,
  ConnackPacket,
  ConnectPacket,
  DisconnectPacket,
  Packet as CodecPacket,
  PacketCmd,
  PingreqPacket,
  PingrespPacket,
  ProtocolVersion,
  PubAckPacket,
  PubackPacket,
  PubcompPacket,
  PublishPacket,
  PubrecPacket,
  PubrelPacket,
  SubackPacket,
  SubscribePacket,
  Subscription,
  UnsubackPacket,
  UnsubscribePacket,
  WillMessage,
} from "../codec/packets.ts";

export type { Packet, QoS } from "../codec/packets.ts";

/** CONNECT: the client opens a session (the codec's {@linkcode ConnectPacket}). */
export type IConnectPacket = ConnectPacket;
/** CONNACK: the broker accepts or refuses a CONNECT (the codec's {@linkcode ConnackPacket}). */
export type IConnackPacket = ConnackPacket;
/** PUBLISH: an application message, in either direction (the codec's {@linkcode PublishPacket}). */
export type IPublishPacket = PublishPacket;
/** PUBACK: acknowledges a QoS 1 PUBLISH. */
export type IPubackPacket = PubackPacket;
/** PUBREC: QoS 2, first acknowledgement of a PUBLISH. */
export type IPubrecPacket = PubrecPacket;
/** PUBREL: QoS 2, the publisher releases the message. */
export type IPubrelPacket = PubrelPacket;
/** PUBCOMP: QoS 2, completion. */
export type IPubcompPacket = PubcompPacket;
/** One topic filter of a SUBSCRIBE, with its options (the codec's {@linkcode Subscription}). */
export type ISubscription = Subscription;
/** SUBSCRIBE: the client asks for topic filters. */
export type ISubscribePacket = SubscribePacket;
/** SUBACK: the granted QoS per filter, or a failure code (0x80 and up). */
export type ISubackPacket = SubackPacket;
/** UNSUBSCRIBE: the client drops topic filters. */
export type IUnsubscribePacket = UnsubscribePacket;
/** UNSUBACK: acknowledges an UNSUBSCRIBE (MQTT 5: one reason code per filter in `granted`). */
export type IUnsubackPacket = UnsubackPacket;
/** PINGREQ: the client's keepalive ping. */
export type IPingreqPacket = PingreqPacket;
/** PINGRESP: the broker's answer to PINGREQ. */
export type IPingrespPacket = PingrespPacket;
/** DISCONNECT: ends the connection (MQTT 5: from either side, with a reason code). */
export type IDisconnectPacket = DisconnectPacket;
/** AUTH: MQTT 5 extended authentication. */
export type IAuthPacket = AuthPacket;

/** The packet type of command `C`, e.g. `PacketOf<"pubrec">` is {@linkcode IPubrecPacket}. */
export type PacketOf<C extends PacketCmd> = C extends PubAckPacket["cmd"]
  ? PubAckPacket & { cmd: C }
  : Extract<CodecPacket, { cmd: C }>;

/** A payload a test may write: bytes, or a string sent as UTF-8. */
export type PayloadInput = string | Uint8Array;

/**
 * A packet a test may pass to {@linkcode FakeConnection.send}: any
 * {@linkcode Packet} of 3.1.1 or MQTT 5, with conveniences. Payloads (also a
 * will's) may be strings, sent as UTF-8; a PUBLISH's `dup` and `retain`
 * default to false; packet identifiers may be left `undefined` in the type
 * (encoding still needs one); `protocolVersion` of a CONNECT defaults to the
 * connection's; `returnCode`/`reasonCode` of a CONNACK default to 0; `granted`
 * of a 3.1.1 UNSUBACK may be omitted (MQTT 5 UNSUBACK: defaults to success for
 * nothing, so give it).
 */
export type SendablePacket =
  | PingreqPacket
  | PingrespPacket
  | DisconnectPacket
  | AuthPacket
  | (Omit<ConnectPacket, "protocolVersion" | "will"> & {
    protocolVersion?: ProtocolVersion;
    will?: Omit<WillMessage, "payload"> & { payload: PayloadInput };
  })
  | (Omit<ConnackPacket, "sessionPresent"> & { sessionPresent?: boolean })
  | (Omit<PublishPacket, "payload" | "dup" | "retain"> & {
    payload: PayloadInput;
    dup?: boolean;
    retain?: boolean;
  })
  | (Omit<PubAckPacket, "messageId"> & { messageId?: number })
  | (Omit<SubscribePacket, "messageId"> & { messageId?: number })
  | (Omit<SubackPacket, "messageId"> & { messageId?: number })
  | (Omit<UnsubscribePacket, "messageId"> & { messageId?: number })
  | (Omit<UnsubackPacket, "messageId" | "granted"> & { messageId?: number; granted?: number[] });

const encoder = new TextEncoder();

function bytes(payload: PayloadInput): Uint8Array {
  return typeof payload === "string" ? encoder.encode(payload) : payload;
}

/**
 * The codec's shape of a packet a test wrote for a connection at protocol
 * level `version`: string payloads encoded, optional fields filled in.
 */
export function toWire(packet: SendablePacket, version: ProtocolVersion): CodecPacket {
  const p = { ...packet } as Record<string, unknown>;
  switch (packet.cmd) {
    case "publish":
      p.payload = bytes(packet.payload);
      p.dup ??= false;
      p.retain ??= false;
      break;
    case "connect":
      p.protocolVersion ??= version;
      if (packet.will !== undefined) {
        p.will = { ...packet.will, payload: bytes(packet.will.payload) };
      }
      break;
    case "connack":
      p.sessionPresent ??= false;
      if (version === 5) {
        p.reasonCode ??= packet.returnCode === undefined ? 0 : v5Code(packet.returnCode);
        delete p.returnCode;
      } else {
        p.returnCode ??= packet.reasonCode === undefined ? 0 : v4Code(packet.reasonCode);
        delete p.reasonCode;
      }
      break;
    case "unsuback":
      p.granted ??= [];
      break;
  }
  return p as unknown as CodecPacket;
}

/** MQTT 5 CONNACK reason codes for the 3.1.1 return codes 0..5. */
const V5_OF_V4: readonly number[] = [0x00, 0x84, 0x85, 0x88, 0x86, 0x87];

/** The MQTT 5 CONNACK reason code standing for 3.1.1 return code `code`. */
export function v5Code(code: number): number {
  return V5_OF_V4[code] ?? code;
}

/** The 3.1.1 CONNACK return code closest to MQTT 5 reason code `code`. */
export function v4Code(code: number): number {
  const index = V5_OF_V4.indexOf(code);
  if (index >= 0) return index;
  if (code === 0x89 || code === 0x97) return 3; // server busy, quota exceeded: unavailable
  if (code === 0x8a || code === 0x8c) return 5; // banned, bad authentication method: not authorized
  return code < 0x80 ? 0 : 3;
}

/** A short description of a packet for error messages, e.g. `PUBLISH topic="a" qos=1 id=3`. */
export function describePacket(packet: CodecPacket): string {
  const parts: string[] = [packet.cmd.toUpperCase()];
  if (packet.cmd === "publish") {
    parts.push(`topic=${JSON.stringify(packet.topic)} qos=${packet.qos}`);
    if (packet.dup) parts.push("dup");
  }
  if ("messageId" in packet && packet.messageId !== undefined) parts.push(`id=${packet.messageId}`);
  if ("reasonCode" in packet && packet.reasonCode) {
    parts.push(`reason=0x${packet.reasonCode.toString(16).padStart(2, "0")}`);
  }
  return parts.join(" ");
}
