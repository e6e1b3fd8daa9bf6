/**
 * The encoder: every packet of MQTT 3.1.1 and MQTT 5 to one whole frame.
 *
 * It validates what it writes and throws TypeError or RangeError naming the
 * problem (a string over 65535 UTF-8 bytes, a property not allowed in that
 * packet or version, a packet id 0, QoS 3, ...): a bad packet object is the
 * caller's bug, so it is not a {@linkcode ProtocolError}.
 *
 * @module
 */

import type {
  AuthPacket,
  ConnackPacket,
  ConnectPacket,
  DisconnectPacket,
  Packet,
  ProtocolVersion,
  PubAckPacket,
  SubackPacket,
  SubscribePacket,
  UnsubackPacket,
  UnsubscribePacket,
} from "./packets.ts";
import { encodeAck, encodePublish } from "./publish.ts";
import { propertiesSize, type PropertyContext, writeProperties } from "./properties.ts";
import { isValidReasonCode, type ReasonCodeCmd, reasonName } from "./reason_codes.ts";
import {
  allocFrame,
  checkBinary,
  checkString,
  checkTopicName,
  isInt,
  MAX_VBI,
  vbiSize,
  writeBinary,
  writeString,
  writeU16,
  writeVbi,
} from "./_wire.ts";

/**
 * One whole frame (fixed header, remaining length, body) for `packet` in
 * protocol `version` (4 for 3.1.1, 5 for MQTT 5). A CONNECT must declare the
 * same `protocolVersion`. A frame may be a view into a buffer shared with
 * other frames: write the Uint8Array itself, never its `.buffer`.
 *
 * @example
 * ```ts
 * import { encode } from "./encode.ts";
 * const frame = encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/#", qos: 1 }] }, 4);
 * console.log(frame.length); // 10
 * ```
 */
export function encode(packet: Packet, version: ProtocolVersion): Uint8Array {
  if (version !== 4 && version !== 5) {
    throw new RangeError(`protocol version must be 4 or 5, got ${version}`);
  }
  if (typeof packet !== "object" || packet === null) {
    throw new TypeError("packet must be an object");
  }
  switch (packet.cmd) {
    case "connect":
      return connect(packet, version);
    case "connack":
      return connack(packet, version);
    case "publish": {
      const p = packet;
      return encodePublish(
        p.topic,
        p.payload,
        p.qos,
        p.qos === 0 ? 0 : p.messageId as number,
        checkBool(p.retain, "PUBLISH retain"),
        checkBool(p.dup, "PUBLISH dup"),
        version,
        p.properties,
      );
    }
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      return pubAck(packet, version);
    case "subscribe":
      return subscribe(packet, version);
    case "suback":
      return suback(packet, version);
    case "unsubscribe":
      return unsubscribe(packet, version);
    case "unsuback":
      return unsuback(packet, version);
    case "pingreq":
      return two(0xc0);
    case "pingresp":
      return two(0xd0);
    case "disconnect":
      return disconnect(packet, version);
    case "auth":
      return auth(packet, version);
    default:
      throw new TypeError(`unknown packet cmd "${(packet as { cmd: unknown }).cmd}"`);
  }
}

/** A frame of remaining length 0. */
function two(first: number): Uint8Array {
  const buf = allocFrame(2);
  buf[0] = first;
  return buf;
}

function checkBool(value: unknown, what: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== "boolean") throw new TypeError(`${what} must be a boolean`);
  return value;
}

function checkId(id: unknown, what: string): number {
  if (!isInt(id, 1, 0xffff)) {
    throw new RangeError(`${what} packet identifier must be an integer in 1..65535, got ${id}`);
  }
  return id;
}

/** Size of a Properties field for `props` in `context`, or 0 with 3.1.1 (where none may be set). */
function propsField(
  props: object | undefined,
  context: PropertyContext,
  version: ProtocolVersion,
  where: string,
): number {
  if (version === 4) {
    if (props && Object.values(props).some((v) => v !== undefined)) {
      throw new TypeError(`${where} properties need MQTT 5; this is 3.1.1`);
    }
    return -1;
  }
  return propertiesSize(props, context);
}

/** Authentication Data without an Authentication Method is a Protocol Error (MQTT 5 §3.1.2.11.10). */
function checkAuthPair(
  props: { authenticationData?: unknown; authenticationMethod?: unknown } | undefined,
  what: string,
) {
  if (props?.authenticationData !== undefined && props.authenticationMethod === undefined) {
    throw new TypeError(`${what} has authenticationData without authenticationMethod`);
  }
}

/** Bytes a Properties field takes, given its content size (-1: none, 3.1.1). */
function fieldBytes(size: number): number {
  return size < 0 ? 0 : vbiSize(size) + size;
}

/** A frame with first byte `first` and room for `remaining` body bytes; `pos` is set after the header. */
function frame(first: number, remaining: number, what: string): { buf: Uint8Array; pos: number } {
  if (remaining > MAX_VBI) {
    throw new RangeError(`${what} remaining length ${remaining} exceeds ${MAX_VBI}`);
  }
  const buf = allocFrame(1 + vbiSize(remaining) + remaining);
  buf[0] = first;
  return { buf, pos: writeVbi(buf, 1, remaining) };
}

function reasonCode(cmd: ReasonCodeCmd, code: unknown, what: string): number {
  if (code === undefined) return 0;
  if (!isInt(code, 0, 255) || !isValidReasonCode(cmd, code)) {
    const name = typeof code === "number" ? ` (${reasonName(code)})` : "";
    throw new RangeError(`${what} reason code ${code}${name} is not valid for ${what}`);
  }
  return code;
}

function connect(p: ConnectPacket, version: ProtocolVersion): Uint8Array {
  if (p.protocolVersion !== version) {
    throw new TypeError(
      `CONNECT declares protocol level ${p.protocolVersion} but is encoded for ${version}`,
    );
  }
  if (p.protocolId !== undefined && p.protocolId !== "MQTT") {
    throw new TypeError(`CONNECT protocolId must be "MQTT", got "${p.protocolId}"`);
  }
  const clean = checkBool(p.clean, "CONNECT clean");
  if (!isInt(p.keepalive, 0, 0xffff)) {
    throw new RangeError(`CONNECT keepalive must be an integer in 0..65535, got ${p.keepalive}`);
  }
  const idLength = checkString(p.clientId, "CONNECT clientId");
  if (idLength === 0 && !clean && version === 4) {
    throw new TypeError("a 3.1.1 CONNECT with an empty clientId must set clean (MQTT-3.1.3-7)");
  }
  let size = 10 + 2 + idLength;
  const props = propsField(p.properties, "connect", version, "CONNECT");
  checkAuthPair(p.properties, "CONNECT");
  size += fieldBytes(props);
  let flags = clean ? 0x02 : 0;
  const will = p.will;
  let willTopic = 0;
  let willProps = -1;
  if (will !== undefined) {
    willTopic = checkTopicName(will.topic, "CONNECT will topic");
    if (!isInt(will.qos, 0, 2)) throw new RangeError(`CONNECT will QoS must be 0..2`);
    size += 2 + willTopic + 2 + checkBinary(will.payload, "CONNECT will payload");
    willProps = propsField(will.properties, "will", version, "will");
    size += fieldBytes(willProps);
    flags |= 0x04 | (will.qos << 3) | (checkBool(will.retain, "will retain") ? 0x20 : 0);
  }
  let userLength = 0;
  if (p.username !== undefined) {
    userLength = checkString(p.username, "CONNECT username");
    size += 2 + userLength;
    flags |= 0x80;
  }
  if (p.password !== undefined) {
    if (p.username === undefined && version === 4) {
      throw new TypeError("a 3.1.1 CONNECT with a password needs a username (MQTT-3.1.2-22)");
    }
    size += 2 + checkBinary(p.password, "CONNECT password");
    flags |= 0x40;
  }
  const f = frame(0x10, size, "CONNECT");
  const buf = f.buf;
  let pos = writeString(buf, f.pos, "MQTT", 4);
  buf[pos++] = version;
  buf[pos++] = flags;
  pos = writeU16(buf, pos, p.keepalive);
  if (props >= 0) pos = writeProperties(buf, pos, p.properties, props);
  pos = writeString(buf, pos, p.clientId, idLength);
  if (will !== undefined) {
    if (willProps >= 0) pos = writeProperties(buf, pos, will.properties, willProps);
    pos = writeString(buf, pos, will.topic, willTopic);
    pos = writeBinary(buf, pos, will.payload);
  }
  if (p.username !== undefined) pos = writeString(buf, pos, p.username, userLength);
  if (p.password !== undefined) writeBinary(buf, pos, p.password);
  return buf;
}

function connack(p: ConnackPacket, version: ProtocolVersion): Uint8Array {
  const present = checkBool(p.sessionPresent, "CONNACK sessionPresent");
  let code: number;
  if (version === 4) {
    if (!isInt(p.returnCode, 0, 5)) {
      throw new RangeError(`3.1.1 CONNACK returnCode must be 0..5, got ${p.returnCode}`);
    }
    code = p.returnCode;
  } else {
    if (p.reasonCode === undefined) throw new TypeError("MQTT 5 CONNACK needs a reasonCode");
    code = reasonCode("connack", p.reasonCode, "CONNACK");
  }
  if (present && code !== 0) {
    throw new TypeError(
      `CONNACK with code ${code} must not set sessionPresent (${
        version === 4 ? "MQTT-3.2.2-4" : "MQTT-3.2.2-6"
      })`,
    );
  }
  const props = propsField(p.properties, "connack", version, "CONNACK");
  checkAuthPair(p.properties, "CONNACK");
  const f = frame(0x20, 2 + fieldBytes(props), "CONNACK");
  f.buf[f.pos] = present ? 1 : 0;
  f.buf[f.pos + 1] = code;
  if (props >= 0) writeProperties(f.buf, f.pos + 2, p.properties, props);
  return f.buf;
}

const ACK_FIRST = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 };

function pubAck(p: PubAckPacket, version: ProtocolVersion): Uint8Array {
  const what = p.cmd.toUpperCase();
  const id = checkId(p.messageId, what);
  if (version === 4) {
    if (p.reasonCode !== undefined && p.reasonCode !== 0) {
      throw new TypeError(`${what} reason codes need MQTT 5; this is 3.1.1`);
    }
    propsField(p.properties, p.cmd, version, what);
    return encodeAck(p.cmd, id);
  }
  const code = reasonCode(p.cmd, p.reasonCode, what);
  const props = propertiesSize(p.properties, p.cmd);
  if (code === 0 && props === 0) return encodeAck(p.cmd, id);
  const f = frame(ACK_FIRST[p.cmd], 3 + fieldBytes(props), what);
  const pos = writeU16(f.buf, f.pos, id);
  f.buf[pos] = code;
  writeProperties(f.buf, pos + 1, p.properties, props);
  return f.buf;
}

function subscribe(p: SubscribePacket, version: ProtocolVersion): Uint8Array {
  const id = checkId(p.messageId, "SUBSCRIBE");
  const subs = p.subscriptions;
  if (!Array.isArray(subs) || subs.length === 0) {
    throw new TypeError("SUBSCRIBE needs at least one subscription (MQTT-3.8.3-3)");
  }
  const props = propsField(p.properties, "subscribe", version, "SUBSCRIBE");
  let size = 2 + fieldBytes(props);
  const lengths: number[] = [];
  const options: number[] = [];
  for (const sub of subs) {
    const length = checkFilter(sub?.topic, "SUBSCRIBE topic filter");
    if (!isInt(sub.qos, 0, 2)) throw new RangeError(`SUBSCRIBE QoS must be 0..2, got ${sub.qos}`);
    let option = sub.qos;
    const nl = checkBool(sub.nl, "SUBSCRIBE nl");
    const rap = checkBool(sub.rap, "SUBSCRIBE rap");
    const rh = sub.rh ?? 0;
    if (!isInt(rh, 0, 2)) throw new RangeError(`SUBSCRIBE retain handling must be 0..2, got ${rh}`);
    if (version === 4) {
      if (nl || rap || rh) throw new TypeError("SUBSCRIBE nl, rap and rh need MQTT 5");
    } else {
      if (nl && sub.topic.startsWith("$share/")) {
        throw new TypeError("No Local on a shared subscription is a Protocol Error (MQTT-3.8.3-4)");
      }
      option |= (nl ? 0x04 : 0) | (rap ? 0x08 : 0) | (rh << 4);
    }
    lengths.push(length);
    options.push(option);
    size += 2 + length + 1;
  }
  const f = frame(0x82, size, "SUBSCRIBE");
  let pos = writeU16(f.buf, f.pos, id);
  if (props >= 0) pos = writeProperties(f.buf, pos, p.properties, props);
  for (let i = 0; i < subs.length; i++) {
    pos = writeString(f.buf, pos, subs[i].topic, lengths[i]);
    f.buf[pos++] = options[i];
  }
  return f.buf;
}

/** Checks a topic filter: a non-empty string whose wildcards stand where MQTT §4.7.1 allows. */
function checkFilter(filter: unknown, what: string): number {
  const length = checkString(filter, what);
  if (length === 0) throw new TypeError(`${what} is empty (MQTT-4.7.3-1)`);
  const levels = (filter as string).split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      throw new TypeError(`${what} "${filter}": "#" must be a whole last level`);
    }
    if (level.includes("+") && level !== "+") {
      throw new TypeError(`${what} "${filter}": "+" must be a whole level`);
    }
  }
  return length;
}

function codes(list: unknown, what: string): number[] {
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(`${what} needs at least one code in granted`);
  }
  return list;
}

function suback(p: SubackPacket, version: ProtocolVersion): Uint8Array {
  const id = checkId(p.messageId, "SUBACK");
  const granted = codes(p.granted, "SUBACK");
  for (const code of granted) {
    const ok = version === 4
      ? code === 0 || code === 1 || code === 2 || code === 0x80
      : isInt(code, 0, 255) && isValidReasonCode("suback", code);
    if (!ok) throw new RangeError(`SUBACK code ${code} is not valid (MQTT-3.9.3-2)`);
  }
  const props = propsField(p.properties, "suback", version, "SUBACK");
  const f = frame(0x90, 2 + fieldBytes(props) + granted.length, "SUBACK");
  let pos = writeU16(f.buf, f.pos, id);
  if (props >= 0) pos = writeProperties(f.buf, pos, p.properties, props);
  f.buf.set(granted, pos);
  return f.buf;
}

function unsubscribe(p: UnsubscribePacket, version: ProtocolVersion): Uint8Array {
  const id = checkId(p.messageId, "UNSUBSCRIBE");
  const filters = p.unsubscriptions;
  if (!Array.isArray(filters) || filters.length === 0) {
    throw new TypeError("UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)");
  }
  const props = propsField(p.properties, "unsubscribe", version, "UNSUBSCRIBE");
  let size = 2 + fieldBytes(props);
  const lengths = filters.map((filter) => checkFilter(filter, "UNSUBSCRIBE topic filter"));
  for (const length of lengths) size += 2 + length;
  const f = frame(0xa2, size, "UNSUBSCRIBE");
  let pos = writeU16(f.buf, f.pos, id);
  if (props >= 0) pos = writeProperties(f.buf, pos, p.properties, props);
  for (let i = 0; i < filters.length; i++) pos = writeString(f.buf, pos, filters[i], lengths[i]);
  return f.buf;
}

function unsuback(p: UnsubackPacket, version: ProtocolVersion): Uint8Array {
  const id = checkId(p.messageId, "UNSUBACK");
  if (version === 4) {
    if (p.granted !== undefined && p.granted.length > 0) {
      throw new TypeError("UNSUBACK reason codes need MQTT 5; this is 3.1.1");
    }
    propsField(p.properties, "unsuback", version, "UNSUBACK");
    const buf = allocFrame(4);
    buf[0] = 0xb0;
    buf[1] = 2;
    writeU16(buf, 2, id);
    return buf;
  }
  const granted = codes(p.granted, "UNSUBACK");
  for (const code of granted) {
    if (!isInt(code, 0, 255) || !isValidReasonCode("unsuback", code)) {
      throw new RangeError(`UNSUBACK code ${code} is not valid (MQTT-3.11.3-2)`);
    }
  }
  const props = propertiesSize(p.properties, "unsuback");
  const f = frame(0xb0, 2 + fieldBytes(props) + granted.length, "UNSUBACK");
  const pos = writeProperties(f.buf, writeU16(f.buf, f.pos, id), p.properties, props);
  f.buf.set(granted, pos);
  return f.buf;
}

function disconnect(p: DisconnectPacket, version: ProtocolVersion): Uint8Array {
  if (version === 4) {
    if (p.reasonCode !== undefined && p.reasonCode !== 0) {
      throw new TypeError("DISCONNECT reason codes need MQTT 5; this is 3.1.1");
    }
    propsField(p.properties, "disconnect", version, "DISCONNECT");
    return two(0xe0);
  }
  return reasonAndProperties(0xe0, "disconnect", p.reasonCode, p.properties, "DISCONNECT");
}

function auth(p: AuthPacket, version: ProtocolVersion): Uint8Array {
  if (version === 4) throw new TypeError("AUTH exists only in MQTT 5");
  checkAuthPair(p.properties, "AUTH");
  return reasonAndProperties(0xf0, "auth", p.reasonCode, p.properties, "AUTH");
}

/** DISCONNECT and AUTH: the reason code and the Properties field, always written. */
function reasonAndProperties(
  first: number,
  cmd: "disconnect" | "auth",
  rc: number | undefined,
  properties: object | undefined,
  what: string,
): Uint8Array {
  const code = reasonCode(cmd, rc, what);
  const props = propertiesSize(properties, cmd);
  const f = frame(first, 1 + fieldBytes(props), what);
  f.buf[f.pos] = code;
  writeProperties(f.buf, f.pos + 1, properties, props);
  return f.buf;
}
