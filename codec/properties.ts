/**
 * MQTT 5 properties (MQTT 5 §2.2.2): the table of every property (identifier,
 * name, type, the packets that may carry it, whether it may repeat), and their
 * encoding and decoding.
 *
 * @module
 */

import type { PacketCmd, UserProperties } from "./packets.ts";
import {
  checkBinary,
  checkString,
  hasWildcard,
  isInt,
  MAX_VBI,
  type Reader,
  vbiSize,
  writeBinary,
  writeString,
  writeU16,
  writeU32,
  writeVbi,
} from "./_wire.ts";

/** Where a property block sits: a packet type, or the will properties of a CONNECT. */
export type PropertyContext = Exclude<PacketCmd, "pingreq" | "pingresp"> | "will";

/**
 * Wire types of property values: `bool` is a byte that must be 0 or 1, `byte`
 * a small number, `u16`/`u32` big-endian integers, `vbi` a variable byte
 * integer, `string` UTF-8, `binary` bytes, `pair` a UTF-8 string pair.
 */
export type PropertyType = "bool" | "byte" | "u16" | "u32" | "vbi" | "string" | "binary" | "pair";

/** One row of the property table. */
export interface PropertySpec {
  /** Property identifier. */
  readonly id: number;
  /** Field name in the properties objects of `packets.ts`. */
  readonly name: string;
  /** Wire type. */
  readonly type: PropertyType;
  /** Packets (and the will) that may carry it. */
  readonly allowed: readonly PropertyContext[];
  /** True when it may appear more than once (User Property; Subscription Identifier in PUBLISH). */
  readonly repeatable: boolean;
  /** Smallest value allowed, for numbers (e.g. 1 for Receive Maximum). */
  readonly min?: number;
  /** Largest value allowed, for numbers when narrower than the type (Maximum QoS: 1). */
  readonly max?: number;
  /** Conformance rule broken by a value out of range, where the spec names one. */
  readonly rangeRule?: string;
}

const ACKS: PropertyContext[] = [
  "connack",
  "puback",
  "pubrec",
  "pubrel",
  "pubcomp",
  "suback",
  "unsuback",
  "disconnect",
  "auth",
];
const MESSAGE: PropertyContext[] = ["publish", "will"];
const ALL: PropertyContext[] = [
  "connect",
  "connack",
  "publish",
  "will",
  "puback",
  "pubrec",
  "pubrel",
  "pubcomp",
  "subscribe",
  "suback",
  "unsubscribe",
  "unsuback",
  "disconnect",
  "auth",
];

function spec(
  id: number,
  name: string,
  type: PropertyType,
  allowed: PropertyContext[],
  extra: Partial<PropertySpec> = {},
): PropertySpec {
  return { id, name, type, allowed, repeatable: false, ...extra };
}

/** Every MQTT 5 property, in identifier order (MQTT 5 Table 2-4). */
export const PROPERTIES: readonly PropertySpec[] = [
  spec(0x01, "payloadFormatIndicator", "bool", MESSAGE),
  spec(0x02, "messageExpiryInterval", "u32", MESSAGE),
  spec(0x03, "contentType", "string", MESSAGE),
  spec(0x08, "responseTopic", "string", MESSAGE),
  spec(0x09, "correlationData", "binary", MESSAGE),
  spec(0x0b, "subscriptionIdentifier", "vbi", ["publish", "subscribe"], { min: 1 }),
  spec(0x11, "sessionExpiryInterval", "u32", ["connect", "connack", "disconnect"]),
  spec(0x12, "assignedClientIdentifier", "string", ["connack"]),
  spec(0x13, "serverKeepAlive", "u16", ["connack"]),
  spec(0x15, "authenticationMethod", "string", ["connect", "connack", "auth"]),
  spec(0x16, "authenticationData", "binary", ["connect", "connack", "auth"]),
  spec(0x17, "requestProblemInformation", "bool", ["connect"]),
  spec(0x18, "willDelayInterval", "u32", ["will"]),
  spec(0x19, "requestResponseInformation", "bool", ["connect"]),
  spec(0x1a, "responseInformation", "string", ["connack"]),
  spec(0x1c, "serverReference", "string", ["connack", "disconnect"]),
  spec(0x1f, "reasonString", "string", ACKS),
  spec(0x21, "receiveMaximum", "u16", ["connect", "connack"], { min: 1 }),
  spec(0x22, "topicAliasMaximum", "u16", ["connect", "connack"]),
  spec(0x23, "topicAlias", "u16", ["publish"], { min: 1, rangeRule: "MQTT-3.3.2-8" }),
  spec(0x24, "maximumQoS", "byte", ["connack"], { max: 1 }),
  spec(0x25, "retainAvailable", "bool", ["connack"]),
  spec(0x26, "userProperties", "pair", ALL, { repeatable: true }),
  spec(0x27, "maximumPacketSize", "u32", ["connect", "connack"], { min: 1 }),
  spec(0x28, "wildcardSubscriptionAvailable", "bool", ["connack"]),
  spec(0x29, "subscriptionIdentifiersAvailable", "bool", ["connack"]),
  spec(0x2a, "sharedSubscriptionAvailable", "bool", ["connack"]),
];

const BY_ID: (PropertySpec | undefined)[] = [];
const BY_NAME = new Map<string, PropertySpec>();
for (const p of PROPERTIES) {
  BY_ID[p.id] = p;
  BY_NAME.set(p.name, p);
}

const CONTEXT_NAMES: Record<PropertyContext, string> = {
  connect: "CONNECT",
  connack: "CONNACK",
  publish: "PUBLISH",
  will: "will properties",
  puback: "PUBACK",
  pubrec: "PUBREC",
  pubrel: "PUBREL",
  pubcomp: "PUBCOMP",
  subscribe: "SUBSCRIBE",
  suback: "SUBACK",
  unsubscribe: "UNSUBSCRIBE",
  unsuback: "UNSUBACK",
  disconnect: "DISCONNECT",
  auth: "AUTH",
};

/** The property with identifier `id`, if MQTT 5 defines one. */
export function propertyById(id: number): PropertySpec | undefined {
  return BY_ID[id];
}

/** The property whose field name is `name` (e.g. "topicAlias"), if any. */
export function propertyByName(name: string): PropertySpec | undefined {
  return BY_NAME.get(name);
}

/** True when `p` may repeat in `context` (Subscription Identifier only in PUBLISH). */
function repeats(p: PropertySpec, context: PropertyContext): boolean {
  return p.repeatable || (p.id === 0x0b && context === "publish");
}

const TYPE_MAX: Record<PropertyType, number> = {
  bool: 1,
  byte: 0xff,
  u16: 0xffff,
  u32: 0xffff_ffff,
  vbi: MAX_VBI,
  string: 0,
  binary: 0,
  pair: 0,
};

/** Bytes one value of `p` takes after its identifier; validates it. */
function valueSize(p: PropertySpec, value: unknown, where: string): number {
  const what = `${where} property ${p.name}`;
  switch (p.type) {
    case "bool":
      if (typeof value !== "boolean") throw new TypeError(`${what} must be a boolean`);
      return 1;
    case "string":
      if (p.id === 0x08 && typeof value === "string" && hasWildcard(value)) {
        throw new TypeError(`${what} "${value}" contains a wildcard (MQTT-3.3.2-14)`);
      }
      return 2 + checkString(value, what);
    case "binary":
      return 2 + checkBinary(value, what);
    case "pair":
      throw new Error("unreachable");
    default: {
      const min = p.min ?? 0;
      const max = p.max ?? TYPE_MAX[p.type];
      if (!isInt(value, min, max)) {
        throw new RangeError(`${what} must be an integer in ${min}..${max}, got ${value}`);
      }
      return p.type === "vbi" ? vbiSize(value) : p.type === "u16" ? 2 : p.type === "u32" ? 4 : 1;
    }
  }
}

/**
 * Validates `props` for `context` and returns the byte count of their content
 * (without the Property Length in front). Throws TypeError or RangeError
 * naming the property that is unknown, not allowed there, or out of range.
 */
export function propertiesSize(props: object | undefined, context: PropertyContext): number {
  if (props === undefined || props === null) return 0;
  if (typeof props !== "object") throw new TypeError(`properties must be an object`);
  const where = CONTEXT_NAMES[context];
  let size = 0;
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined) continue;
    const p = BY_NAME.get(name);
    if (!p) throw new TypeError(`unknown property "${name}" in ${where}`);
    if (!p.allowed.includes(context)) {
      throw new TypeError(`property ${name} is not allowed in ${where}`);
    }
    if (p.type === "pair") {
      if (!Array.isArray(value)) {
        throw new TypeError(`${where} userProperties must be an array of [name, value] pairs`);
      }
      for (const pair of value as unknown[]) {
        if (!Array.isArray(pair) || pair.length !== 2) {
          throw new TypeError(`${where} userProperties must be an array of [name, value] pairs`);
        }
        const n = checkString(pair[0], `${where} user property name`);
        const v = checkString(pair[1], `${where} user property value`);
        size += 5 + n + v;
      }
    } else if (repeats(p, context)) {
      if (!Array.isArray(value)) throw new TypeError(`${where} property ${name} must be an array`);
      for (const one of value) size += 1 + valueSize(p, one, where);
    } else {
      size += 1 + valueSize(p, value, where);
    }
  }
  return size;
}

/**
 * Writes the Property Length (`size`, from {@linkcode propertiesSize}) and the
 * properties at `pos`, in the order of the object's keys; returns the
 * position after them.
 */
export function writeProperties(
  buf: Uint8Array,
  pos: number,
  props: object | undefined,
  size: number,
): number {
  pos = writeVbi(buf, pos, size);
  if (size === 0 || !props) return pos;
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined) continue;
    const p = BY_NAME.get(name)!;
    if (p.type === "pair") {
      for (const [n, v] of value as UserProperties) {
        buf[pos++] = p.id;
        pos = writeString(buf, pos, n, utf8(n));
        pos = writeString(buf, pos, v, utf8(v));
      }
    } else if (Array.isArray(value)) {
      for (const one of value) pos = writeValue(buf, pos, p, one);
    } else {
      pos = writeValue(buf, pos, p, value);
    }
  }
  return pos;
}

function utf8(s: string): number {
  return checkString(s, "string");
}

function writeValue(buf: Uint8Array, pos: number, p: PropertySpec, value: unknown): number {
  buf[pos++] = p.id;
  switch (p.type) {
    case "bool":
      buf[pos] = value ? 1 : 0;
      return pos + 1;
    case "byte":
      buf[pos] = value as number;
      return pos + 1;
    case "u16":
      return writeU16(buf, pos, value as number);
    case "u32":
      return writeU32(buf, pos, value as number);
    case "vbi":
      return writeVbi(buf, pos, value as number);
    case "string":
      return writeString(buf, pos, value as string, utf8(value as string));
    default:
      return writeBinary(buf, pos, value as Uint8Array);
  }
}

/**
 * The whole Properties field (Property Length, then the properties) of
 * `props` for `context`, validated. A PUBLISH properties block made once can
 * be handed to `encodePublish` for every message that shares it.
 *
 * @example
 * ```ts
 * import { encodeProperties } from "./properties.ts";
 * const block = encodeProperties("publish", { contentType: "text/plain" });
 * console.log(block.length); // 1 + 1 + 2 + 10
 * ```
 */
export function encodeProperties(context: PropertyContext, props: object | undefined): Uint8Array {
  const size = propertiesSize(props, context);
  const block = new Uint8Array(vbiSize(size) + size);
  writeProperties(block, 0, props, size);
  return block;
}

/**
 * Reads a Properties field at the reader's position for `context`: the
 * Property Length, then each property, checking that it is known, allowed
 * there, not repeated unless it may be, and in range. Returns undefined when
 * there are none.
 */
export function readProperties(
  r: Reader,
  context: PropertyContext,
): Record<string, unknown> | undefined {
  const length = r.vbi("property length");
  if (length === 0) return undefined;
  const end = r.pos + length;
  if (end > r.end) throw r.short("property list");
  const outerEnd = r.end;
  r.end = end;
  const props: Record<string, unknown> = {};
  const where = CONTEXT_NAMES[context];
  while (r.pos < end) {
    const id = r.u8("property identifier");
    const p = BY_ID[id];
    if (!p) {
      throw r.fail(`unknown property identifier 0x${hex(id)} in the ${where}`);
    }
    if (!p.allowed.includes(context)) {
      throw r.fail(`property ${p.name} (0x${hex(id)}) is not allowed in the ${where}`);
    }
    const value = readValue(r, p);
    const name = p.name;
    if (p.type === "pair") {
      const list = props[name] as UserProperties | undefined;
      if (list) list.push(value as [string, string]);
      else props[name] = [value];
    } else if (repeats(p, context)) {
      const list = props[name] as unknown[] | undefined;
      if (list) list.push(value);
      else props[name] = [value];
    } else if (name in props) {
      throw r.fail(`property ${name} (0x${hex(id)}) appears more than once`);
    } else {
      props[name] = value;
    }
  }
  r.end = outerEnd;
  return props;
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

function readValue(r: Reader, p: PropertySpec): unknown {
  switch (p.type) {
    case "bool": {
      const byte = r.u8(p.name);
      if (byte > 1) throw r.fail(`property ${p.name} is ${byte}; it must be 0 or 1`);
      return byte === 1;
    }
    case "string": {
      const s = r.string(p.name);
      if (p.id === 0x08 && hasWildcard(s)) {
        throw r.fail(`the response topic "${s}" contains a wildcard`, undefined, "MQTT-3.3.2-14");
      }
      return s;
    }
    case "binary":
      return r.binary(p.name);
    case "pair":
      return [r.string("user property name"), r.string("user property value")];
    default: {
      const value = p.type === "u16"
        ? r.u16(p.name)
        : p.type === "u32"
        ? r.u32(p.name)
        : p.type === "vbi"
        ? r.vbi(p.name)
        : r.u8(p.name);
      if ((p.min !== undefined && value < p.min) || (p.max !== undefined && value > p.max)) {
        const range = p.max !== undefined ? `0..${p.max}` : `at least ${p.min}`;
        throw r.fail(`property ${p.name} is ${value}; it must be ${range}`, undefined, p.rangeRule);
      }
      return value;
    }
  }
}

/** Throws a ProtocolError when Authentication Data comes without an Authentication Method. */
export function checkAuthPair(r: Reader, props: Record<string, unknown> | undefined): void {
  if (props && props.authenticationData !== undefined && props.authenticationMethod === undefined) {
    throw r.fail("Authentication Data without an Authentication Method");
  }
}
