/**
 * Test helpers for the codec: a seeded PRNG, a generator of random valid
 * packets of every type for both protocol versions, and the adapters between
 * our packet model and mqtt-packet's (the differential oracle).
 */

import type {
  Packet,
  PacketCmd,
  ProtocolVersion,
  QoS,
  Subscription,
  UserProperties,
} from "../codec/packets.ts";
import { type PropertyContext, REASON_CODES } from "../codec/mod.ts";

/** mulberry32: a small, fast, seeded PRNG; the same seed gives the same sequence. */
export class Rng {
  #state: number;
  /** A generator started at `seed`. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }
  /** True with probability `p`. */
  chance(p = 0.5): boolean {
    return this.next() < p;
  }
  /** One element of `list`. */
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)];
  }
  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** Every packet type. */
export const CMDS: readonly PacketCmd[] = words(
  "connect connack publish puback pubrec pubrel pubcomp subscribe suback unsubscribe unsuback " +
    "pingreq pingresp disconnect auth",
) as PacketCmd[];

/** Pieces of strings: ASCII, 2-, 3- and 4-byte UTF-8, a BOM, a space. */
const PIECES = "a|b|z|Q|0|7|-|_| |é|ü|ß|日本|€|😀|\uFEFF".split("|");

/** A random string of up to `max` pieces (at least `min`), no "/" "+" "#". */
export function randomText(rng: Rng, min = 0, max = 12): string {
  const n = rng.chance(0.03) ? rng.range(100, 400) : rng.range(min, max);
  let s = "";
  for (let i = 0; i < n; i++) s += rng.pick(PIECES);
  return s;
}

/** A random topic name: one or more levels, no wildcard, not empty. */
export function randomTopic(rng: Rng): string {
  const levels = rng.range(1, 5);
  const parts: string[] = [];
  for (let i = 0; i < levels; i++) parts.push(randomText(rng, i === 0 ? 1 : 0, 6));
  if (rng.chance(0.05)) return "$SYS/" + parts.join("/");
  return parts.join("/");
}

/** A random valid topic filter, wildcards where §4.7.1 allows them. */
export function randomFilter(rng: Rng): string {
  const levels = rng.range(1, 5);
  const parts: string[] = [];
  for (let i = 0; i < levels; i++) {
    if (i === levels - 1 && rng.chance(0.2)) parts.push("#");
    else if (rng.chance(0.2)) parts.push("+");
    else parts.push(randomText(rng, 1, 5));
  }
  return parts.join("/");
}

/** A payload whose size makes remaining lengths of 1, 2 and 3 bytes. */
export function randomPayload(rng: Rng): Uint8Array {
  const r = rng.next();
  const size = r < 0.15
    ? 0
    : r < 0.6
    ? rng.range(1, 100)
    : r < 0.9
    ? rng.range(101, 2000)
    : r < 0.97
    ? rng.range(2000, 16_500)
    : rng.range(16_384, 20_000);
  return rng.bytes(size);
}

/** Options of the generator. */
export interface GenOptions {
  /** Allow user property names repeated non-adjacently (mqtt-packet cannot express them). */
  interleave?: boolean;
  /** Allow packets mqtt-packet refuses to generate though MQTT 5 allows them. */
  beyondOracle?: boolean;
}

const NAMES = ["k", "key", "région", "x-y", "日本", "", "a b"];

function userProperties(rng: Rng, interleave: boolean): UserProperties {
  const n = rng.range(1, 4);
  const pairs: UserProperties = [];
  if (interleave) {
    for (let i = 0; i < n + 1; i++) {
      pairs.push([rng.pick(NAMES.slice(0, 2)), randomText(rng, 0, 4)]);
    }
    return pairs;
  }
  const names = [...new Set(Array.from({ length: n }, () => rng.pick(NAMES)))];
  for (const name of names) {
    const count = rng.chance(0.3) ? rng.range(2, 3) : 1;
    for (let i = 0; i < count; i++) pairs.push([name, randomText(rng, 1, 4)]);
  }
  return pairs;
}

type Gen = (rng: Rng) => unknown;
const u32: Gen = (rng) => rng.pick([0, 1, 60, 0xffff, 0xffff_ffff, rng.int(2 ** 32)]);
const u16min1: Gen = (rng) => rng.pick([1, 10, 0xffff, rng.range(1, 0xffff)]);
const u16: Gen = (rng) => rng.pick([0, 1, 0xffff, rng.int(0x10000)]);
const bool: Gen = (rng) => rng.chance();
const text: Gen = (rng) => randomText(rng, 0, 8);
const bin: Gen = (rng) => rng.bytes(rng.pick([0, 1, 5, 40]));
const subId: Gen = (rng) => rng.pick([1, 127, 128, 16_383, 16_384, 268_435_455, rng.range(1, 1e6)]);

const VALUES: Record<string, Gen> = {
  payloadFormatIndicator: bool,
  messageExpiryInterval: u32,
  contentType: text,
  responseTopic: randomTopic,
  correlationData: bin,
  subscriptionIdentifier: subId,
  sessionExpiryInterval: u32,
  assignedClientIdentifier: text,
  serverKeepAlive: u16,
  authenticationMethod: text,
  authenticationData: bin,
  requestProblemInformation: bool,
  willDelayInterval: u32,
  requestResponseInformation: bool,
  responseInformation: text,
  serverReference: text,
  reasonString: text,
  receiveMaximum: u16min1,
  topicAliasMaximum: u16,
  topicAlias: u16min1,
  maximumQoS: (rng) => rng.int(2),
  retainAvailable: bool,
  maximumPacketSize: (rng) => rng.pick([1, 1024, 0xffff_ffff, rng.range(1, 2 ** 32 - 1)]),
  wildcardSubscriptionAvailable: bool,
  subscriptionIdentifiersAvailable: bool,
  sharedSubscriptionAvailable: bool,
};

/** The properties each context allows (MQTT 5 Table 2-4), User Property aside. */
const ALLOWED: Record<PropertyContext, string[]> = {
  connect: words(
    "sessionExpiryInterval receiveMaximum maximumPacketSize topicAliasMaximum " +
      "requestResponseInformation requestProblemInformation authenticationMethod authenticationData",
  ),
  connack: words(
    "sessionExpiryInterval receiveMaximum maximumQoS retainAvailable maximumPacketSize " +
      "assignedClientIdentifier topicAliasMaximum reasonString wildcardSubscriptionAvailable " +
      "subscriptionIdentifiersAvailable sharedSubscriptionAvailable serverKeepAlive " +
      "responseInformation serverReference authenticationMethod authenticationData",
  ),
  publish: words(
    "payloadFormatIndicator messageExpiryInterval topicAlias responseTopic correlationData " +
      "subscriptionIdentifier contentType",
  ),
  will: words(
    "willDelayInterval payloadFormatIndicator messageExpiryInterval contentType responseTopic " +
      "correlationData",
  ),
  puback: ["reasonString"],
  pubrec: ["reasonString"],
  pubrel: ["reasonString"],
  pubcomp: ["reasonString"],
  subscribe: ["subscriptionIdentifier"],
  suback: ["reasonString"],
  unsubscribe: [],
  unsuback: ["reasonString"],
  disconnect: words("sessionExpiryInterval reasonString serverReference"),
  auth: words("authenticationMethod authenticationData reasonString"),
};

function words(text: string): string[] {
  return text.split(" ");
}

/** Random valid properties for `context`, or undefined (none). */
export function randomProperties(
  rng: Rng,
  context: PropertyContext,
  opts: GenOptions = {},
): Record<string, unknown> | undefined {
  if (rng.chance(0.3)) return undefined;
  const props: Record<string, unknown> = {};
  const names = ALLOWED[context].filter(() => rng.chance(0.35));
  if (rng.chance(0.4)) names.splice(rng.int(names.length + 1), 0, "userProperties");
  for (const name of names) {
    if (name === "userProperties") {
      props.userProperties = userProperties(rng, !!opts.interleave && rng.chance(0.5));
    } else if (name === "subscriptionIdentifier" && context === "publish") {
      props.subscriptionIdentifier = Array.from({ length: rng.range(1, 3) }, () => subId(rng));
    } else {
      props[name] = VALUES[name](rng);
    }
  }
  if (props.authenticationData !== undefined && props.authenticationMethod === undefined) {
    props.authenticationMethod = randomText(rng, 1, 4);
  }
  return Object.keys(props).length > 0 ? props : undefined;
}

function id(rng: Rng): number {
  return rng.pick([1, 2, 255, 256, 0xffff, rng.range(1, 0xffff)]);
}

function reason(rng: Rng, cmd: keyof typeof REASON_CODES): number {
  return rng.chance(0.5) ? 0 : rng.pick(REASON_CODES[cmd]);
}

/** Sets `key` on `target` when `value` is defined (decoded packets omit absent fields). */
function put(target: Record<string, unknown>, key: string, value: unknown): void {
  if (value !== undefined) target[key] = value;
}

/**
 * A random valid `cmd` packet for `version`, in the shape our decoder returns
 * (so decode(encode(p)) must equal p).
 */
export function randomPacket(
  rng: Rng,
  cmd: PacketCmd,
  version: ProtocolVersion,
  opts: GenOptions = {},
): Packet {
  const v5 = version === 5;
  const props = (context: PropertyContext) => v5 ? randomProperties(rng, context, opts) : undefined;
  const p: Record<string, unknown> = { cmd };
  switch (cmd) {
    case "connect": {
      p.protocolId = "MQTT";
      p.protocolVersion = version;
      p.clean = rng.chance();
      p.keepalive = rng.pick([0, 60, 0xffff, rng.int(0x10000)]);
      p.clientId = rng.chance(0.1) && (p.clean || (v5 && opts.beyondOracle))
        ? ""
        : randomText(rng, 1);
      put(p, "properties", props("connect"));
      if (rng.chance(0.5)) {
        const will: Record<string, unknown> = {
          topic: randomTopic(rng),
          payload: rng.bytes(rng.pick([0, 3, 200])),
          qos: rng.int(3),
          retain: rng.chance(),
        };
        put(will, "properties", props("will"));
        p.will = will;
      }
      const user = rng.chance(0.5);
      if (user) p.username = randomText(rng, 0, 6);
      if ((user || (v5 && opts.beyondOracle && rng.chance(0.3))) && rng.chance(0.6)) {
        p.password = rng.bytes(rng.pick([0, 8, 30]));
      }
      break;
    }
    case "connack": {
      if (v5) {
        p.reasonCode = reason(rng, "connack");
        p.sessionPresent = p.reasonCode === 0 && rng.chance();
        put(p, "properties", props("connack"));
      } else {
        p.returnCode = rng.chance(0.5) ? 0 : rng.range(1, 5);
        p.sessionPresent = p.returnCode === 0 && rng.chance();
      }
      break;
    }
    case "publish": {
      const qos = rng.int(3) as QoS;
      let properties = props("publish");
      let topic = randomTopic(rng);
      if (v5 && rng.chance(0.1)) {
        topic = "";
        properties = { ...properties, topicAlias: rng.range(1, 100) };
      }
      Object.assign(p, { topic, payload: randomPayload(rng), qos, retain: rng.chance() });
      p.dup = qos > 0 && rng.chance();
      if (qos > 0) p.messageId = id(rng);
      put(p, "properties", properties);
      break;
    }
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp": {
      p.messageId = id(rng);
      if (v5) {
        p.reasonCode = reason(rng, cmd);
        put(p, "properties", props(cmd));
      }
      break;
    }
    case "subscribe": {
      p.messageId = id(rng);
      const subs: Subscription[] = [];
      for (let i = rng.range(1, 4); i > 0; i--) {
        const topic = rng.chance(0.1) ? `$share/g/${randomFilter(rng)}` : randomFilter(rng);
        const sub: Subscription = { topic, qos: rng.int(3) as QoS };
        if (v5) {
          sub.nl = !topic.startsWith("$share/") && rng.chance();
          sub.rap = rng.chance();
          sub.rh = rng.int(3) as 0 | 1 | 2;
        }
        subs.push(sub);
      }
      p.subscriptions = subs;
      put(p, "properties", props("subscribe"));
      break;
    }
    case "suback":
    case "unsuback": {
      p.messageId = id(rng);
      const n = rng.range(1, 5);
      if (cmd === "suback" || v5) {
        p.granted = Array.from(
          { length: n },
          () => v5 ? rng.pick(REASON_CODES[cmd]) : rng.pick([0, 1, 2, 0x80]),
        );
      } else {
        p.granted = [];
      }
      put(p, "properties", props(cmd));
      break;
    }
    case "unsubscribe": {
      p.messageId = id(rng);
      p.unsubscriptions = Array.from({ length: rng.range(1, 4) }, () => randomFilter(rng));
      put(p, "properties", props("unsubscribe"));
      break;
    }
    case "disconnect":
      if (v5) {
        p.reasonCode = reason(rng, "disconnect");
        put(p, "properties", props("disconnect"));
      }
      break;
    case "auth":
      p.reasonCode = reason(rng, "auth");
      put(p, "properties", props("auth"));
      break;
  }
  return p as unknown as Packet;
}

/** True when user property names repeat non-adjacently somewhere in `packet`. */
export function hasInterleavedUserProperties(packet: unknown): boolean {
  let found = false;
  JSON.stringify(packet, (key, value) => {
    if (key === "userProperties" && Array.isArray(value)) {
      const seen = new Set<string>();
      let last: string | undefined;
      for (const [name] of value as UserProperties) {
        if (name !== last && seen.has(name)) found = true;
        seen.add(name);
        last = name;
      }
    }
    return value instanceof Uint8Array ? [] : value;
  });
  return found;
}

/** Hex dump, for failure messages. */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** JSON of a packet with bytes as hex, for failure messages. */
export function show(packet: unknown): string {
  const text = JSON.stringify(packet, (_, v) => v instanceof Uint8Array ? `<${hex(v)}>` : v);
  return text.length > 2000 ? text.slice(0, 2000) + "..." : text;
}

// ---------------------------------------------------------------------------
// Malformed frames, one per strictness rule

type Part = number | string | readonly number[];
const utf8 = new TextEncoder();

/**
 * A frame: `first`, the remaining length, then the parts in order: a number is
 * one byte, a string an MQTT string (2-byte length, UTF-8), an array raw bytes.
 */
export function frame(first: number, ...parts: Part[]): Uint8Array {
  const body: number[] = [];
  for (const part of parts) {
    if (typeof part === "number") body.push(part);
    else if (typeof part === "string") {
      const bytes = utf8.encode(part);
      body.push(bytes.length >> 8, bytes.length & 0xff, ...bytes);
    } else body.push(...part);
  }
  const head = [first];
  let n = body.length;
  do {
    head.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Uint8Array.from([...head, ...body]);
}

/**
 * Parses one frame written as `first body...`: two hex digits are a byte,
 * 'text' an MQTT string (2-byte length, UTF-8; \\0 stands for U+0000), and
 * the remaining length is computed.
 */
export function parseFrame(text: string): Uint8Array {
  const [first, ...tokens] = text.trim().split(/ +/);
  const parts: Part[] = tokens.map((t) =>
    t.startsWith("'") ? t.slice(1, -1).replaceAll("\\0", "\0") : parseInt(t, 16)
  );
  return frame(parseInt(first, 16), ...parts);
}

/** A malformed frame and what the decoder must say of it. */
export interface Malformed {
  /** What is wrong with it. */
  what: string;
  /** Protocol level to decode it with. */
  version: ProtocolVersion;
  /** The whole frame. */
  bytes: Uint8Array;
  /** The conformance rule our error names (undefined where the spec numbers none). */
  rule: string | undefined;
  /** Text our ProtocolError's message contains. */
  says: string;
  /** "agree" when mqtt-packet rejects it too, else the kind of disagreement (see docs/codec.md). */
  oracle: string;
}

// version | what is wrong | frame | rule ("-": none) | our message says | mqtt-packet ("=": the rule)
// CONNECT frames: 10, 'MQTT', level, flags, keep alive 00 3c, [properties], client id, ...
const TABLE = `
4 | packet type 0 | 00 | - | packet type 0 is reserved | agree
4 | AUTH in 3.1.1 | f0 | - | does not exist in MQTT 3.1.1 | agree
4 | PUBACK flags 0001 | 41 00 01 | MQTT-2.2.2-2 | flags are 0b0001 | agree
5 | PUBACK flags 0001 | 41 00 01 | MQTT-2.1.3-1 | flags are 0b0001 | agree
4 | PUBREL flags 0000 | 60 00 01 | MQTT-2.2.2-2 | must be 0b0010 | agree
5 | SUBSCRIBE flags 0000 | 80 00 01 00 'a' 00 | MQTT-2.1.3-1 | must be 0b0010 | agree
4 | UNSUBSCRIBE flags 0011 | a3 00 01 'a' | MQTT-2.2.2-2 | must be 0b0010 | agree
5 | DISCONNECT flags 1000 | e8 | MQTT-2.1.3-1 | must be 0b0000 | agree
4 | PINGREQ flags 0010 | c2 | MQTT-2.2.2-2 | must be 0b0000 | agree
4 | PUBLISH QoS 3 | 36 'a' 00 01 | MQTT-3.3.1-4 | QoS 3 | agree
4 | PUBLISH QoS 0 with DUP | 38 'a' | MQTT-3.3.1-2 | DUP | =
4 | PINGREQ with a body | c0 00 | - | remaining length 1; it must be 0 | fixed-remaining-length
5 | PINGRESP with a body | d0 00 | - | remaining length 1; it must be 0 | fixed-remaining-length
4 | DISCONNECT with a body | e0 00 | - | it must be 0 | fixed-remaining-length
4 | PUBACK of 3 bytes | 40 00 01 00 | - | it must be 2 | fixed-remaining-length
4 | CONNACK of 3 bytes | 20 00 00 00 | - | it must be 2 | fixed-remaining-length
4 | UNSUBACK of 3 bytes | b0 00 01 00 | - | it must be 2 | agree
4 | protocol name MQTs | 10 'MQTs' 04 02 00 3c 'c' | MQTT-3.1.2-1 | not "MQTT" | agree
4 | protocol level 3 | 10 'MQTT' 03 02 00 3c 'c' | MQTT-3.1.2-2 | level 3 is not | =
4 | bridge level 0x84 | 10 'MQTT' 84 02 00 3c 'c' | MQTT-3.1.2-2 | level 132 | =
5 | protocol level 6 | 10 'MQTT' 06 02 00 3c 'c' | MQTT-3.1.2-2 | level 6 | agree
4 | reserved connect flag | 10 'MQTT' 04 03 00 3c 'c' | MQTT-3.1.2-3 | reserved connect flag | agree
4 | will QoS, no will flag | 10 'MQTT' 04 0a 00 3c 'c' | MQTT-3.1.2-13 | will QoS 1 without | agree
5 | will QoS, no will flag | 10 'MQTT' 05 0a 00 3c 00 'c' | MQTT-3.1.2-11 | will QoS 1 without | agree
4 | will retain, no will flag | 10 'MQTT' 04 22 00 3c 'c' | MQTT-3.1.2-15 | will retain set | agree
5 | will retain, no will flag | 10 'MQTT' 05 22 00 3c 00 'c' | MQTT-3.1.2-13 | will retain set | agree
4 | will QoS 3 | 10 'MQTT' 04 1e 00 3c 'c' 'w' 00 00 | MQTT-3.1.2-14 | will QoS 3 | =
5 | will QoS 3 | 10 'MQTT' 05 1e 00 3c 00 'c' 00 'w' 00 00 | MQTT-3.1.2-12 | will QoS 3 | =
4 | password, no user name | 10 'MQTT' 04 42 00 3c 'c' 00 01 09 | MQTT-3.1.2-22 | password flag | =
4 | empty will topic | 10 'MQTT' 04 06 00 3c 'c' '' 00 00 | MQTT-4.7.3-1 | will topic is empty | =
4 | will topic a/# | 10 'MQTT' 04 06 00 3c 'c' 'a/#' 00 00 | MQTT-4.7.1-1 | wildcard | =
5 | will topic a/+ | 10 'MQTT' 05 06 00 3c 00 'c' 00 'a/+' 00 00 | MQTT-4.7.0-1 | wildcard | =
4 | client id with U+0000 | 10 'MQTT' 04 02 00 3c 'a\0b' | MQTT-1.5.3-2 | U+0000 | =
5 | client id with U+0000 | 10 'MQTT' 05 02 00 3c 00 'a\0b' | MQTT-1.5.4-2 | U+0000 | =
4 | client id C3 28 | 10 'MQTT' 04 02 00 3c 00 02 c3 28 | MQTT-1.5.3-1 | not well-formed UTF-8 | =
4 | client id C0 80 (overlong) | 10 'MQTT' 04 02 00 3c 00 02 c0 80 | MQTT-1.5.3-1 | not well-formed | =
5 | client id ED A0 80 (surrogate) | 10 'MQTT' 05 02 00 3c 00 00 03 ed a0 80 | MQTT-1.5.4-1 | not well-formed | =
4 | CONNECT with a byte after it | 10 'MQTT' 04 02 00 3c 'c' 00 | - | 1 unexpected byte | trailing-bytes
4 | CONNECT cut in the client id | 10 'MQTT' 04 02 00 3c 00 05 61 | - | identifier runs past | agree
5 | Authentication Data alone | 10 'MQTT' 05 02 00 3c 04 16 00 01 09 'c' | - | Authentication Data without | auth-data-without-method
5 | Receive Maximum 0 | 10 'MQTT' 05 02 00 3c 03 21 00 00 'c' | - | receiveMaximum is 0 | property-value
5 | Maximum Packet Size 0 | 10 'MQTT' 05 02 00 3c 05 27 00 00 00 00 'c' | - | maximumPacketSize is 0 | property-value
5 | Request Problem Information 2 | 10 'MQTT' 05 02 00 3c 02 17 02 'c' | - | must be 0 or 1 | property-value
5 | Reason String in CONNECT | 10 'MQTT' 05 02 00 3c 04 1f 'a' 'c' | - | not allowed in the CONNECT | property-not-allowed
5 | Session Expiry twice | 10 'MQTT' 05 02 00 3c 0a 11 00 00 00 01 11 00 00 00 02 'c' | - | more than once | property-repeated
5 | unknown property 0x05 | 10 'MQTT' 05 02 00 3c 02 05 00 'c' | - | unknown property identifier 0x05 | agree
4 | CONNACK flags 0x02 | 20 02 00 | - | reserved bits 7-1 | agree
5 | CONNACK flags 0x02 | 20 02 00 00 | MQTT-3.2.2-1 | reserved bits 7-1 | agree
4 | CONNACK return code 6 | 20 00 06 | - | return code 6 is reserved | connack-return-code
4 | session present, return code 5 | 20 01 05 | MQTT-3.2.2-4 | session present | =
5 | CONNACK reason code 0x01 | 20 00 01 00 | MQTT-3.2.2-8 | reason code 0x01 | =
5 | session present, reason 0x80 | 20 01 80 00 | MQTT-3.2.2-6 | session present | =
5 | CONNACK without properties | 20 00 00 | - | property length runs past | field-past-end
5 | Maximum QoS 2 | 20 00 00 02 24 02 | - | maximumQoS is 2 | property-value
5 | Retain Available 2 | 20 00 00 02 25 02 | - | must be 0 or 1 | property-value
4 | topic a/+ | 30 'a/+' | MQTT-3.3.2-2 | wildcard | =
5 | topic a/# | 30 'a/#' 00 | MQTT-3.3.2-2 | wildcard | =
4 | empty topic | 30 '' | MQTT-4.7.3-1 | topic name is empty | =
5 | empty topic, no alias | 30 '' 00 | - | no Topic Alias | empty-topic-without-alias
4 | QoS 1, packet id 0 | 32 'a' 00 00 | MQTT-2.3.1-1 | packet identifier 0 | =
5 | QoS 2, packet id 0 | 34 'a' 00 00 00 | MQTT-2.2.1-3 | packet identifier 0 | =
4 | QoS 1, no packet id | 32 'a' | - | packet identifier runs past | field-past-end
4 | topic with U+0000 | 30 'a\0' | MQTT-1.5.3-2 | U+0000 | =
5 | Topic Alias 0 | 30 'a' 03 23 00 00 | MQTT-3.3.2-8 | topicAlias is 0 | =
5 | Response Topic r/# | 30 'a' 06 08 'r/#' | MQTT-3.3.2-14 | wildcard | =
5 | Payload Format Indicator 2 | 30 'a' 02 01 02 | - | must be 0 or 1 | property-value
5 | Subscription Identifier 0 | 30 'a' 02 0b 00 | - | subscriptionIdentifier is 0 | property-value
5 | Subscription Identifier of 5 bytes | 30 'a' 06 0b ff ff ff ff 01 | - | more than 4 bytes | agree
5 | Content Type twice | 30 'a' 08 03 'x' 03 'y' | - | more than once | property-repeated
5 | Session Expiry in PUBLISH | 30 'a' 05 11 00 00 00 01 | - | not allowed in the PUBLISH | property-not-allowed
5 | properties past the end | 30 'a' 09 01 01 | - | property list runs past | agree
4 | PUBACK packet id 0 | 40 00 00 | MQTT-2.3.1-6 | packet identifier 0 | =
5 | PUBREC packet id 0 | 50 00 00 | MQTT-2.2.1-5 | packet identifier 0 | =
5 | PUBACK reason 0x01 | 40 00 01 01 | MQTT-3.4.2-1 | reason code 0x01 | agree
5 | PUBREC reason 0x92 | 50 00 01 92 | MQTT-3.5.2-1 | reason code 0x92 | agree
5 | PUBREL reason 0x10 | 62 00 01 10 | MQTT-3.6.2-1 | reason code 0x10 | agree
5 | PUBCOMP reason 0x80 | 70 00 01 80 | MQTT-3.7.2-1 | reason code 0x80 | agree
5 | PUBACK with a byte after it | 40 00 01 00 00 09 | - | 1 unexpected byte | trailing-bytes
5 | Topic Alias in PUBACK | 40 00 01 00 03 23 00 01 | - | not allowed in the PUBACK | property-not-allowed
4 | SUBSCRIBE without filters | 82 00 01 | MQTT-3.8.3-3 | no topic filter | =
5 | SUBSCRIBE without filters | 82 00 01 00 | MQTT-3.8.3-2 | no topic filter | =
4 | SUBSCRIBE packet id 0 | 82 00 00 'a' 00 | MQTT-2.3.1-1 | packet identifier 0 | =
4 | requested QoS 3 | 82 00 01 'a' 03 | MQTT-3.8.3-4 | requested QoS byte 0x3 | agree
4 | requested QoS byte 0x04 | 82 00 01 'a' 04 | MQTT-3.8.3-4 | requested QoS byte 0x4 | agree
5 | options bit 6 | 82 00 01 00 'a' 40 | MQTT-3.8.3-5 | reserved bits 7-6 | agree
5 | options maximum QoS 3 | 82 00 01 00 'a' 03 | - | maximum QoS 3 | agree
5 | options retain handling 3 | 82 00 01 00 'a' 30 | - | retain handling 3 | agree
5 | No Local on $share | 82 00 01 00 '$share/g/a' 04 | MQTT-3.8.3-4 | No Local | =
4 | empty topic filter | 82 00 01 '' 00 | MQTT-4.7.3-1 | topic filter is empty | =
4 | filter without options | 82 00 01 'a' | - | options runs past | agree
5 | Subscription Identifier twice | 82 00 01 04 0b 01 0b 02 'a' 00 | - | more than once | property-repeated
4 | SUBACK without codes | 90 00 01 | - | no return code | ack-without-codes
4 | SUBACK code 3 | 90 00 01 03 | MQTT-3.9.3-2 | return code 0x3 is reserved | agree
5 | SUBACK code 0x03 | 90 00 01 00 03 | MQTT-3.9.3-2 | reason code 0x03 | agree
4 | SUBACK packet id 0 | 90 00 00 00 | MQTT-2.3.1-7 | packet identifier 0 | =
5 | SUBACK packet id 0 | 90 00 00 00 00 | MQTT-2.2.1-6 | packet identifier 0 | =
4 | UNSUBSCRIBE without filters | a2 00 01 | MQTT-3.10.3-2 | no topic filter | =
5 | UNSUBSCRIBE without filters | a2 00 01 00 | MQTT-3.10.3-2 | no topic filter | =
5 | UNSUBSCRIBE filter FF | a2 00 01 00 00 01 ff | MQTT-1.5.4-1 | not well-formed | =
5 | UNSUBACK without codes | b0 00 01 00 | - | no reason code | ack-without-codes
5 | UNSUBACK code 0x01 | b0 00 01 00 01 | MQTT-3.11.3-2 | reason code 0x01 | agree
5 | DISCONNECT reason 0x05 | e0 05 | MQTT-3.14.2-1 | reason code 0x05 | agree
5 | DISCONNECT with a byte after it | e0 00 00 01 | - | 1 unexpected byte | trailing-bytes
5 | AUTH reason 0x01 | f0 01 00 | MQTT-3.15.2-1 | reason code 0x01 | agree
5 | AUTH reason code alone | f0 18 | - | property length runs past | auth-reason-only
5 | AUTH data alone | f0 18 04 16 00 01 09 | - | Authentication Data without | auth-data-without-method
`;

/** Every strictness rule of the decoder, by example (plus a remaining length of 5 bytes). */
export const MALFORMED: readonly Malformed[] = [
  ...TABLE.trim().split("\n").map((line) => {
    const [version, what, bytes, rule, says, oracle] = line.split(" | ");
    return {
      what,
      version: Number(version) as ProtocolVersion,
      bytes: parseFrame(bytes),
      rule: rule === "-" ? undefined : rule,
      says,
      oracle: oracle === "=" ? rule : oracle,
    };
  }),
  {
    what: "remaining length not minimal",
    version: 5,
    bytes: Uint8Array.of(0xc0, 0x80, 0x00),
    rule: "MQTT-1.5.5-1",
    says: "shortest form",
    oracle: "MQTT-1.5.5-1",
  },
  {
    what: "remaining length of 5 bytes",
    version: 4,
    bytes: Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x01),
    rule: undefined,
    says: "more than 4 bytes",
    oracle: "agree",
  },
];
