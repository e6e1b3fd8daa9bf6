/**
 * Decoding of each packet type's body (everything after the fixed header),
 * with every check MQTT makes on it. The fixed header itself (type, flags,
 * the lengths fixed per type) is checked in `decode.ts` before the body
 * arrives. Private to the codec.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import type {
  AuthPacket,
  ConnackPacket,
  ConnectPacket,
  DisconnectPacket,
  Packet,
  ProtocolVersion,
  PubAckPacket,
  PublishPacket,
  QoS,
  SubackPacket,
  SubscribePacket,
  Subscription,
  UnsubackPacket,
  UnsubscribePacket,
  WillMessage,
} from "./packets.ts";
import { checkAuthPair, type PropertyContext, readProperties } from "./properties.ts";
import { isValidReasonCode, REASON_CODE_RULES, type ReasonCodeCmd } from "./reason_codes.ts";
import { hasWildcard, Reader } from "./_wire.ts";

/** Packet names by type number, for messages. */
export const PACKET_NAMES = [
  "reserved",
  "CONNECT",
  "CONNACK",
  "PUBLISH",
  "PUBACK",
  "PUBREC",
  "PUBREL",
  "PUBCOMP",
  "SUBSCRIBE",
  "SUBACK",
  "UNSUBSCRIBE",
  "UNSUBACK",
  "PINGREQ",
  "PINGRESP",
  "DISCONNECT",
  "AUTH",
];

const ACK_CMDS = ["puback", "pubrec", "pubrel", "pubcomp"] as const;

/**
 * Decodes the body `buf[start..end)` of a packet whose fixed header's first
 * byte is `first` (already checked), with protocol `version`.
 */
export function decodeBody(
  first: number,
  buf: Uint8Array,
  start: number,
  end: number,
  version: ProtocolVersion,
): Packet {
  const type = first >> 4;
  const r = new Reader(buf, start, end, version, PACKET_NAMES[type]);
  switch (type) {
    case 1:
      return connect(r);
    case 2:
      return connack(r);
    case 3:
      return publish(r, first);
    case 4:
    case 5:
    case 6:
    case 7:
      return pubAck(r, ACK_CMDS[type - 4]);
    case 8:
      return subscribe(r);
    case 9:
      return suback(r);
    case 10:
      return unsubscribe(r);
    case 11:
      return unsuback(r);
    case 12:
      return { cmd: "pingreq" };
    case 13:
      return { cmd: "pingresp" };
    case 14:
      return disconnect(r);
    default:
      return auth(r);
  }
}

/** The properties of an MQTT 5 packet (undefined when none); nothing in 3.1.1. */
function properties(r: Reader, context: PropertyContext): Record<string, unknown> | undefined {
  return r.version === 5 ? readProperties(r, context) : undefined;
}

function reasonCode(r: Reader, cmd: ReasonCodeCmd): number {
  const code = r.u8("reason code");
  if (!isValidReasonCode(cmd, code)) {
    const hex = code.toString(16).padStart(2, "0");
    throw r.fail(
      `reason code 0x${hex} is not one a ${r.name} may carry`,
      undefined,
      REASON_CODE_RULES[cmd],
    );
  }
  return code;
}

function connect(r: Reader): ConnectPacket {
  const nameLength = r.u16("protocol name length");
  const b = r.buf;
  const p = r.pos;
  if (
    nameLength !== 4 || p + 4 > r.end || b[p] !== 0x4d || b[p + 1] !== 0x51 || b[p + 2] !== 0x54 ||
    b[p + 3] !== 0x54
  ) {
    throw new ProtocolError('CONNECT: the protocol name is not "MQTT"', { rule: "MQTT-3.1.2-1" });
  }
  r.pos += 4;
  const level = r.u8("protocol level");
  if (level !== 4 && level !== 5) {
    throw new ProtocolError(
      `CONNECT: protocol level ${level} is not supported; only 4 (3.1.1) and 5 (MQTT 5) are`,
      { rule: "MQTT-3.1.2-2" },
    );
  }
  r.version = level;
  const flags = r.u8("connect flags");
  if (flags & 0x01) {
    throw r.fail("the reserved connect flag (bit 0) is set", "MQTT-3.1.2-3", "MQTT-3.1.2-3");
  }
  const willFlag = (flags & 0x04) !== 0;
  const willQos = (flags >> 3) & 3;
  const willRetain = (flags & 0x20) !== 0;
  if (!willFlag) {
    if (willQos !== 0) {
      throw r.fail(`will QoS ${willQos} without the will flag`, "MQTT-3.1.2-13", "MQTT-3.1.2-11");
    }
    if (willRetain) {
      throw r.fail("will retain set without the will flag", "MQTT-3.1.2-15", "MQTT-3.1.2-13");
    }
  } else if (willQos === 3) {
    throw r.fail("will QoS 3", "MQTT-3.1.2-14", "MQTT-3.1.2-12");
  }
  const hasUser = (flags & 0x80) !== 0;
  const hasPassword = (flags & 0x40) !== 0;
  if (hasPassword && !hasUser && level === 4) {
    throw r.fail("password flag set without the user name flag", "MQTT-3.1.2-22");
  }
  const keepalive = r.u16("keep alive");
  const props = properties(r, "connect");
  checkAuthPair(r, props);
  const packet: ConnectPacket = {
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: level,
    clean: (flags & 0x02) !== 0,
    keepalive,
    clientId: "",
  };
  if (props) packet.properties = props;
  packet.clientId = r.string("client identifier");
  if (willFlag) {
    const willProps = properties(r, "will");
    const topic = r.string("will topic");
    if (topic === "") throw r.fail("the will topic is empty", "MQTT-4.7.3-1", "MQTT-4.7.3-1");
    if (hasWildcard(topic)) {
      throw r.fail(`the will topic "${topic}" contains a wildcard`, "MQTT-4.7.1-1", "MQTT-4.7.0-1");
    }
    const will: WillMessage = {
      topic,
      payload: r.binary("will payload"),
      qos: willQos as QoS,
      retain: willRetain,
    };
    if (willProps) will.properties = willProps;
    packet.will = will;
  }
  if (hasUser) packet.username = r.string("user name");
  if (hasPassword) packet.password = r.binary("password");
  r.done();
  return packet;
}

function connack(r: Reader): ConnackPacket {
  const flags = r.u8("acknowledge flags");
  if (flags > 1) {
    throw r.fail("reserved bits 7-1 of the acknowledge flags are set", undefined, "MQTT-3.2.2-1");
  }
  const sessionPresent = flags === 1;
  if (r.version === 4) {
    const code = r.u8("return code");
    if (code > 5) throw r.fail(`return code ${code} is reserved (3.1.1 Table 3.1)`);
    if (sessionPresent && code !== 0) {
      throw r.fail(`session present set with return code ${code}`, "MQTT-3.2.2-4");
    }
    return { cmd: "connack", sessionPresent, returnCode: code };
  }
  const code = reasonCode(r, "connack");
  if (sessionPresent && code !== 0) {
    throw r.fail(
      `session present set with reason code 0x${code.toString(16)}`,
      undefined,
      "MQTT-3.2.2-6",
    );
  }
  const packet: ConnackPacket = { cmd: "connack", sessionPresent, reasonCode: code };
  const props = readProperties(r, "connack");
  checkAuthPair(r, props);
  if (props) packet.properties = props;
  r.done();
  return packet;
}

function publish(r: Reader, first: number): PublishPacket {
  const qos = ((first >> 1) & 3) as QoS;
  const topic = r.string("topic name");
  if (hasWildcard(topic)) {
    throw r.fail(`the topic name "${topic}" contains a wildcard`, "MQTT-3.3.2-2", "MQTT-3.3.2-2");
  }
  const messageId = qos === 0 ? 0 : r.packetId("MQTT-2.3.1-1", "MQTT-2.2.1-3");
  let props: Record<string, unknown> | undefined;
  if (r.version === 5) {
    props = readProperties(r, "publish");
    if (topic === "" && props?.topicAlias === undefined) {
      throw r.fail("the topic name is empty and there is no Topic Alias");
    }
  } else if (topic === "") {
    throw r.fail("the topic name is empty", "MQTT-4.7.3-1");
  }
  const packet: PublishPacket = {
    cmd: "publish",
    topic,
    payload: r.buf.subarray(r.pos, r.end),
    qos,
    retain: (first & 1) === 1,
    dup: (first & 8) === 8,
  };
  if (qos !== 0) packet.messageId = messageId;
  if (props) packet.properties = props;
  return packet;
}

function pubAck(r: Reader, cmd: PubAckPacket["cmd"]): PubAckPacket {
  const messageId = r.packetId("MQTT-2.3.1-6", "MQTT-2.2.1-5");
  if (r.version === 4) return { cmd, messageId };
  const packet: PubAckPacket = { cmd, messageId, reasonCode: 0 };
  if (r.left > 0) packet.reasonCode = reasonCode(r, cmd);
  if (r.left > 0) {
    const props = readProperties(r, cmd);
    if (props) packet.properties = props;
    r.done();
  }
  return packet;
}

function subscribe(r: Reader): SubscribePacket {
  const messageId = r.packetId("MQTT-2.3.1-1", "MQTT-2.2.1-3");
  const packet: SubscribePacket = { cmd: "subscribe", messageId, subscriptions: [] };
  const props = properties(r, "subscribe");
  if (props) packet.properties = props;
  if (r.left === 0) throw r.fail("no topic filter", "MQTT-3.8.3-3", "MQTT-3.8.3-2");
  const v5 = r.version === 5;
  while (r.left > 0) {
    const topic = filter(r);
    const options = r.u8("subscription options");
    const qos = options & 3;
    if (!v5) {
      if (options > 2) {
        throw r.fail(`requested QoS byte 0x${options.toString(16)} is invalid`, "MQTT-3.8.3-4");
      }
      packet.subscriptions.push({ topic, qos: qos as QoS });
      continue;
    }
    if (options & 0xc0) {
      throw r.fail(
        "reserved bits 7-6 of the subscription options are set",
        undefined,
        "MQTT-3.8.3-5",
      );
    }
    if (qos === 3) throw r.fail("maximum QoS 3 in the subscription options");
    const rh = (options >> 4) & 3;
    if (rh === 3) throw r.fail("retain handling 3 in the subscription options");
    const nl = (options & 0x04) !== 0;
    if (nl && topic.startsWith("$share/")) {
      throw r.fail(`No Local set on the shared subscription "${topic}"`, undefined, "MQTT-3.8.3-4");
    }
    const sub: Subscription = {
      topic,
      qos: qos as QoS,
      nl,
      rap: (options & 0x08) !== 0,
      rh: rh as 0 | 1 | 2,
    };
    packet.subscriptions.push(sub);
  }
  return packet;
}

function filter(r: Reader): string {
  const topic = r.string("topic filter");
  if (topic === "") throw r.fail("a topic filter is empty", "MQTT-4.7.3-1", "MQTT-4.7.3-1");
  return topic;
}

function suback(r: Reader): SubackPacket {
  const messageId = r.packetId("MQTT-2.3.1-7", "MQTT-2.2.1-6");
  const packet: SubackPacket = { cmd: "suback", messageId, granted: [] };
  const props = properties(r, "suback");
  if (props) packet.properties = props;
  if (r.left === 0) throw r.fail("no return code; there must be one per topic filter subscribed");
  while (r.left > 0) {
    if (r.version === 5) {
      packet.granted.push(reasonCode(r, "suback"));
      continue;
    }
    const code = r.u8("return code");
    if (code > 2 && code !== 0x80) {
      throw r.fail(`return code 0x${code.toString(16)} is reserved`, "MQTT-3.9.3-2");
    }
    packet.granted.push(code);
  }
  return packet;
}

function unsubscribe(r: Reader): UnsubscribePacket {
  const messageId = r.packetId("MQTT-2.3.1-1", "MQTT-2.2.1-3");
  const packet: UnsubscribePacket = { cmd: "unsubscribe", messageId, unsubscriptions: [] };
  const props = properties(r, "unsubscribe");
  if (props) packet.properties = props;
  if (r.left === 0) throw r.fail("no topic filter", "MQTT-3.10.3-2", "MQTT-3.10.3-2");
  while (r.left > 0) packet.unsubscriptions.push(filter(r));
  return packet;
}

function unsuback(r: Reader): UnsubackPacket {
  const messageId = r.packetId("MQTT-2.3.1-7", "MQTT-2.2.1-6");
  const packet: UnsubackPacket = { cmd: "unsuback", messageId, granted: [] };
  if (r.version === 4) return packet;
  const props = readProperties(r, "unsuback");
  if (props) packet.properties = props;
  if (r.left === 0) throw r.fail("no reason code; there must be one per topic filter unsubscribed");
  while (r.left > 0) packet.granted.push(reasonCode(r, "unsuback"));
  return packet;
}

function disconnect(r: Reader): DisconnectPacket {
  if (r.version === 4) return { cmd: "disconnect" };
  const packet: DisconnectPacket = { cmd: "disconnect", reasonCode: 0 };
  if (r.left > 0) packet.reasonCode = reasonCode(r, "disconnect");
  if (r.left > 0) {
    const props = readProperties(r, "disconnect");
    if (props) packet.properties = props;
    r.done();
  }
  return packet;
}

function auth(r: Reader): AuthPacket {
  const packet: AuthPacket = { cmd: "auth", reasonCode: 0 };
  if (r.left === 0) return packet;
  packet.reasonCode = reasonCode(r, "auth");
  const props = readProperties(r, "auth");
  checkAuthPair(r, props);
  if (props) packet.properties = props;
  r.done();
  return packet;
}
