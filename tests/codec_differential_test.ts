/**
 * Differential tests of the codec against mqtt-packet (the oracle):
 *
 * 1. random valid packets of every type, both versions: the same bytes;
 * 2. the same bytes decoded by both: the same fields;
 * 3. mutated frames: accepted by both or rejected by both, or else a
 *    disagreement of a kind listed below (and in docs/codec.md) with the
 *    reason the spec gives. A new kind of disagreement fails the test.
 *
 * Every case has its own seed (printed on failure): `CODEC_SEED=n` reruns from n.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { isDeepStrictEqual } from "node:util";
import { generate, type Packet as TheirPacket, parser } from "mqtt-packet";
import { decodePacket, encode, PacketDecoder } from "../codec/mod.ts";
import type { Packet, ProtocolVersion, UserProperties } from "../codec/packets.ts";
import { ProtocolError } from "../errors.ts";
import {
  CMDS,
  hasInterleavedUserProperties,
  hex,
  MALFORMED,
  randomPacket,
  Rng,
  show,
} from "./_codec_gen.ts";

const BASE_SEED = Number(Deno.env.get("CODEC_SEED") ?? 20_250_601);
const VERSIONS: ProtocolVersion[] = [4, 5];

// ---------------------------------------------------------------------------
// Between our packet model and mqtt-packet's

/** Our packet as mqtt-packet's `generate` takes it: Buffers, user properties as a record. */
function toTheirs(value: unknown, key = ""): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (Array.isArray(value)) {
    if (key === "userProperties") {
      const record: Record<string, string | string[]> = {};
      for (const [name, v] of value as UserProperties) {
        const old = record[name];
        record[name] = old === undefined ? v : Array.isArray(old) ? [...old, v] : [old, v];
      }
      return record;
    }
    return value.map((v) => toTheirs(v));
  }
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = toTheirs(v, k);
    return out;
  }
  return value;
}

type Loose = Record<string, unknown>;

/** Canonical form for comparing: plain objects and Uint8Arrays, user properties grouped by name. */
function canon(value: unknown, key = ""): unknown {
  if (value instanceof Uint8Array) return new Uint8Array(value); // a Buffer becomes plain
  if (key === "userProperties") {
    const pairs: [string, string][] = Array.isArray(value)
      ? value as UserProperties
      : Object.entries(value as Loose).flatMap(([name, v]) =>
        (Array.isArray(v) ? v : [v]).map((one) => [name, String(one)] as [string, string])
      );
    const groups = new Map<string, string[]>();
    for (const [name, v] of pairs) groups.set(name, [...(groups.get(name) ?? []), v]);
    return [...groups].flatMap(([name, vs]) => vs.map((v) => [name, v]));
  }
  if (Array.isArray(value)) return value.map((v) => canon(v));
  if (value !== null && typeof value === "object") {
    const out: Loose = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = canon(v, k);
    return out;
  }
  return value;
}

function props(p: Loose, cmd: string): Loose | undefined {
  const properties = p.properties as Loose | undefined;
  if (!properties) return undefined;
  const out = { ...properties };
  if (cmd === "publish" && out.subscriptionIdentifier !== undefined) {
    out.subscriptionIdentifier = [out.subscriptionIdentifier].flat();
  }
  return out;
}

/** A packet mqtt-packet's parser emitted, in our model. */
function fromTheirs(p: Loose, version: ProtocolVersion): Loose {
  const cmd = p.cmd as string;
  const v5 = version === 5;
  const out: Loose = { cmd };
  const pick = (...keys: string[]) => keys.forEach((k) => out[k] = p[k]);
  switch (cmd) {
    case "connect": {
      pick(
        "protocolId",
        "protocolVersion",
        "clean",
        "keepalive",
        "clientId",
        "username",
        "password",
      );
      out.properties = props(p, cmd);
      const will = p.will as Loose | undefined;
      if (will) out.will = { ...will, properties: props(will, "will") };
      break;
    }
    case "connack":
      pick("sessionPresent", v5 ? "reasonCode" : "returnCode");
      out.properties = props(p, cmd);
      break;
    case "publish":
      pick("topic", "payload", "qos", "retain", "dup");
      if ((p.qos as number) > 0) out.messageId = p.messageId;
      out.properties = props(p, cmd);
      break;
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      pick("messageId", ...(v5 ? ["reasonCode"] : []));
      out.properties = props(p, cmd);
      break;
    case "subscribe":
      pick("messageId", "subscriptions");
      out.properties = props(p, cmd);
      break;
    case "suback":
      pick("messageId", "granted");
      out.properties = props(p, cmd);
      break;
    case "unsubscribe":
      pick("messageId", "unsubscriptions");
      out.properties = props(p, cmd);
      break;
    case "unsuback":
      pick("messageId");
      out.granted = v5 ? p.granted : [];
      out.properties = props(p, cmd);
      break;
    case "disconnect":
    case "auth":
      if (v5) pick("reasonCode");
      out.properties = props(p, cmd);
      break;
  }
  return out;
}

function same(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(canon(a), canon(b));
}

interface Outcome {
  /** No error. */
  ok: boolean;
  /** No error, but bytes of an unfinished frame are held: no verdict yet. */
  pending: boolean;
  packets: Loose[];
  error?: Error;
}

/** Our decoder's verdict on `bytes`, pushed whole or in the given pieces. */
function runOurs(bytes: Uint8Array, version: ProtocolVersion, cuts: number[] = []): Outcome {
  const packets: Loose[] = [];
  const decoder = new PacketDecoder({ protocolVersion: version });
  try {
    let from = 0;
    for (const to of [...cuts, bytes.length]) {
      decoder.push(bytes.subarray(from, to), (p) => {
        packets.push(p as unknown as Loose);
        // As a server does (and as mqtt-packet's parser does by itself).
        if (p.cmd === "connect") decoder.protocolVersion = p.protocolVersion;
      });
      from = to;
    }
    return { ok: true, pending: decoder.buffered > 0, packets };
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return { ok: false, pending: false, packets, error };
  }
}

function runTheirs(bytes: Uint8Array, version: ProtocolVersion): Outcome {
  const theirParser = parser({ protocolVersion: version });
  const packets: Loose[] = [];
  let error: Error | undefined;
  theirParser.on("packet", (p) => packets.push(fromTheirs(p as unknown as Loose, version)));
  theirParser.on("error", (e: Error) => error ??= e);
  const left = theirParser.parse(Buffer.from(bytes));
  // Mid-frame with nothing buffered (header read, body awaited) is pending too.
  const midFrame = (theirParser as unknown as { _stateCounter: number })._stateCounter !== 0;
  const pending = error === undefined && (left > 0 || midFrame);
  return { ok: error === undefined, pending, packets, error };
}

// ---------------------------------------------------------------------------
// The accepted disagreements. Each key names one kind; docs/codec.md lists the
// same keys with the spec section that justifies them.

/** Frames we reject and mqtt-packet accepts: keyed by our error's rule, or by its message. */
const WE_ARE_STRICTER: Record<string, string> = {
  "MQTT-1.5.3-1": "3.1.1 strings must be well-formed UTF-8 (no surrogates)",
  "MQTT-1.5.4-1": "MQTT 5 strings must be well-formed UTF-8 (no surrogates)",
  "MQTT-1.5.3-2": "3.1.1 strings must not hold U+0000",
  "MQTT-1.5.4-2": "MQTT 5 strings must not hold U+0000",
  "MQTT-1.5.5-1": "MQTT 5 variable byte integers must be in their shortest form",
  "MQTT-2.3.1-1": "3.1.1 PUBLISH (QoS>0), SUBSCRIBE, UNSUBSCRIBE need a non-zero packet id",
  "MQTT-2.2.1-3": "MQTT 5 PUBLISH (QoS>0), SUBSCRIBE, UNSUBSCRIBE need a non-zero packet id",
  "MQTT-2.3.1-6": "3.1.1 PUBACK/PUBREC/PUBREL/PUBCOMP echo a (non-zero) packet id",
  "MQTT-2.3.1-7": "3.1.1 SUBACK/UNSUBACK echo a (non-zero) packet id",
  "MQTT-2.2.1-5": "MQTT 5 PUBACK/PUBREC/PUBREL/PUBCOMP echo a (non-zero) packet id",
  "MQTT-2.2.1-6": "MQTT 5 SUBACK/UNSUBACK echo a (non-zero) packet id",
  "MQTT-3.1.2-2": "only protocol levels 4 and 5 are supported (no 3.1, no bridge bit)",
  "MQTT-3.1.2-14": "3.1.1 will QoS 3 is invalid",
  "MQTT-3.1.2-12": "MQTT 5 will QoS 3 is a Malformed Packet",
  "MQTT-3.1.2-22": "3.1.1: no password without a user name",
  "MQTT-3.2.2-4": "3.1.1 CONNACK: session present must be 0 with a non-zero return code",
  "MQTT-3.2.2-6": "MQTT 5 CONNACK: session present must be 0 with a non-zero reason code",
  "MQTT-3.2.2-8": "MQTT 5 CONNACK reason codes come from its list",
  "MQTT-3.3.1-2": "PUBLISH with QoS 0 must have DUP 0",
  "MQTT-3.3.2-2": "PUBLISH topic names must not hold wildcards",
  "MQTT-3.3.2-8": "MQTT 5 Topic Alias 0 is not allowed",
  "MQTT-3.3.2-14": "MQTT 5 Response Topic must not hold wildcards",
  "MQTT-3.8.3-3": "3.1.1 SUBSCRIBE needs at least one topic filter",
  "MQTT-3.8.3-2": "MQTT 5 SUBSCRIBE needs at least one topic filter",
  "MQTT-3.10.3-2": "UNSUBSCRIBE needs at least one topic filter",
  "MQTT-3.8.3-4": "MQTT 5: No Local on a shared subscription is a Protocol Error",
  "MQTT-4.7.0-1": "MQTT 5 will topic is a topic name: no wildcards",
  "MQTT-4.7.1-1": "3.1.1 will topic is a topic name: no wildcards",
  "MQTT-4.7.3-1": "topic names and topic filters are at least one character long",
  "trailing-bytes": "bytes after the content a packet declares make it malformed",
  "field-past-end": "a field running past the packet's remaining length is malformed",
  "fixed-remaining-length": "PINGREQ/PINGRESP 0, 3.1.1 DISCONNECT 0, 3.1.1 acks and CONNACK 2",
  "property-not-allowed": "MQTT 5 §2.2.2.2: a property outside its packet types is an error",
  "property-repeated": "MQTT 5 §2.2.2.2: a single-value property more than once",
  "property-value": "MQTT 5 §3.x: property values out of range (0 or 1 bytes, non-zero maxima)",
  "connack-return-code": "3.1.1 CONNACK return codes 6-255 are reserved (Table 3.1)",
  "empty-topic-without-alias": "MQTT 5 §3.3.2.1: an empty topic name needs a Topic Alias",
  "ack-without-codes": "SUBACK (and MQTT 5 UNSUBACK) carry one code per topic filter",
  "auth-data-without-method": "MQTT 5 §3.1.2.11.10: Authentication Data needs a Method",
  "auth-reason-only": "MQTT 5 §3.15.2.1: AUTH omits the reason code and property length together",
};

/** Frames mqtt-packet rejects and we accept, keyed by what it got wrong. */
const ORACLE_REJECTS_VALID: Record<string, string> = {
  "oracle-auth-without-reason-code": "MQTT 5 §3.15.2.1: AUTH may have remaining length 0",
  "oracle-reads-past-packet":
    "mqtt-packet bounds some reads by the bytes buffered, not the remaining length",
};

/** Frames both accept but decode differently. */
const ORACLE_DECODES_DIFFERENTLY: Record<string, string> = {
  "oracle-drops-empty-user-property-value":
    "mqtt-packet groups user properties in a record and drops an empty value repeated by name",
};

/** Packets MQTT 5 allows that mqtt-packet refuses to generate. */
const ORACLE_REFUSES: Record<string, string> = {
  "oracle-refuses-empty-client-id": "MQTT 5 §3.1.3.1: empty ClientID with Clean Start 0",
  "oracle-refuses-password-alone": "MQTT 5 §3.1.2.9: a password without a user name",
};

const MESSAGE_KINDS: [RegExp, string][] = [
  [/unexpected byte\(s\) after the end of its content/, "trailing-bytes"],
  [/runs past the end of the packet/, "field-past-end"],
  [/has remaining length \d+; it must be \d+/, "fixed-remaining-length"],
  [/is not allowed in the/, "property-not-allowed"],
  [/appears more than once/, "property-repeated"],
  [/property \w+ is \d+; it must be/, "property-value"],
  [/return code \d+ is reserved/, "connack-return-code"],
  [/empty and there is no Topic Alias/, "empty-topic-without-alias"],
  [/no (return|reason) code; there must be one per/, "ack-without-codes"],
  [/Authentication Data without an Authentication Method/, "auth-data-without-method"],
];

/** The kind of an error of ours, for the classifier. */
function ourKind(error: Error, bytes: Uint8Array): string {
  const rule = (error as ProtocolError).rule;
  if (rule) return rule;
  if (
    bytes[0] === 0xf0 && bytes[1] === 1 && /AUTH: the property length runs past/.test(error.message)
  ) {
    return "auth-reason-only";
  }
  for (const [pattern, kind] of MESSAGE_KINDS) if (pattern.test(error.message)) return kind;
  return `unclassified: ${error.message}`;
}

function theirKind(error: Error, bytes: Uint8Array): string {
  if (bytes[0] === 0xf0 && bytes[1] === 0 && /Invalid auth reason code/.test(error.message)) {
    return "oracle-auth-without-reason-code";
  }
  return `unclassified: mqtt-packet said ${error.message}`;
}

/** mqtt-packet's user property record: a later value replaces an earlier empty one. */
function oracleUserProperties(pairs: UserProperties): UserProperties {
  const record: Record<string, string | string[]> = {};
  for (const [name, value] of pairs) {
    const old = record[name];
    if (old) record[name] = Array.isArray(old) ? [...old, value] : [old, value];
    else record[name] = value;
  }
  return Object.entries(record).flatMap(([n, v]) =>
    [v].flat().map((x) => [n, x] as [string, string])
  );
}

function withOracleUserProperties(value: unknown, key = ""): unknown {
  if (key === "userProperties") return oracleUserProperties(value as UserProperties);
  if (value instanceof Uint8Array || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => withOracleUserProperties(v));
  const out: Loose = {};
  for (const [k, v] of Object.entries(value)) out[k] = withOracleUserProperties(v, k);
  return out;
}

function decodeKind(ours: Loose[], theirs: Loose[]): string {
  if (
    ours.length === theirs.length &&
    ours.every((p, i) => same(withOracleUserProperties(p), theirs[i]))
  ) {
    return "oracle-drops-empty-user-property-value";
  }
  return `unclassified: decoded differently: ours ${show(ours)} mqtt-packet ${show(theirs)}`;
}

/**
 * `bytes` with its last frame completed: an unfinished remaining length closed
 * and a short body padded with zeros, so that both decoders reach a verdict.
 */
function complete(bytes: Uint8Array): Uint8Array {
  const out = Array.from(bytes);
  let off = 0;
  while (off < out.length) {
    let i = off + 1;
    let length = 0;
    for (let multiplier = 1;; multiplier *= 128) {
      if (i === out.length) out.push(1);
      const byte = out[i++];
      length += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) break;
      if (i - off > 4) return Uint8Array.from(out); // over 4 bytes: malformed for both
    }
    if (length > 100_000) break;
    while (out.length < i + length) out.push(0);
    off = i + length;
  }
  return Uint8Array.from(out);
}

/** The frames in `bytes`, cut by their fixed headers (the last may be incomplete). */
function framesOf(bytes: Uint8Array): Uint8Array[] {
  const frames: Uint8Array[] = [];
  let off = 0;
  while (off < bytes.length) {
    let i = off + 1;
    let length = 0;
    for (let multiplier = 1;; multiplier *= 128) {
      if (i >= bytes.length || i - off > 4) return [...frames, bytes.subarray(off)];
      const byte = bytes[i++];
      length += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) break;
    }
    const end = Math.min(i + length, bytes.length);
    frames.push(bytes.subarray(off, end));
    off = end;
  }
  return frames;
}

/**
 * Undefined when both agree (or one has no verdict yet), else the kind of
 * disagreement. Several frames are judged one by one first, so the kind names
 * the frame at fault; if each agrees alone but not together, mqtt-packet read
 * across a packet boundary.
 */
function disagreement(bytes: Uint8Array, version: ProtocolVersion): string | undefined {
  const whole = frameDisagreement(bytes, version);
  const frames = whole === undefined ? [] : framesOf(bytes);
  if (frames.length <= 1) return whole;
  for (const frame of frames) {
    const kind = frameDisagreement(frame, version);
    if (kind !== undefined) return kind;
    const ours = runOurs(frame, version);
    if (!ours.ok) return undefined; // both reject this frame: both stop here
    const connect = ours.packets.find((p) => p.cmd === "connect");
    if (connect) version = connect.protocolVersion as ProtocolVersion;
  }
  return "oracle-reads-past-packet";
}

function frameDisagreement(bytes: Uint8Array, version: ProtocolVersion): string | undefined {
  const ours = runOurs(bytes, version);
  const theirs = runTheirs(bytes, version);
  if (!ours.ok && !theirs.ok) return undefined;
  if ((!ours.ok && theirs.pending) || (!theirs.ok && ours.pending)) return undefined;
  if (!ours.ok) return ourKind(ours.error!, bytes);
  if (!theirs.ok) return theirKind(theirs.error!, bytes);
  if (
    ours.packets.length === theirs.packets.length &&
    ours.packets.every((p, i) => same(p, theirs.packets[i]))
  ) {
    return undefined;
  }
  return decodeKind(ours.packets, theirs.packets);
}

function accepted(kind: string): boolean {
  return kind in WE_ARE_STRICTER || kind in ORACLE_REJECTS_VALID ||
    kind in ORACLE_DECODES_DIFFERENTLY;
}

/** Runs `body` for `count` cases of every type and version, each with its own seed. */
function forCases(
  count: number,
  body: (rng: Rng, cmd: Packet["cmd"], version: ProtocolVersion, seed: number) => void,
): number {
  let seed = BASE_SEED;
  let cases = 0;
  for (const version of VERSIONS) {
    for (const cmd of CMDS) {
      if (cmd === "auth" && version === 4) continue;
      for (let i = 0; i < count; i++) {
        seed++;
        body(new Rng(seed), cmd, version, seed);
        cases++;
      }
    }
  }
  return cases;
}

// ---------------------------------------------------------------------------

Deno.test("differential: random valid packets encode to the same bytes as mqtt-packet's", () => {
  const refused = new Map<string, number>();
  let compared = 0;
  let interleaved = 0;
  forCases(150, (rng, cmd, version, seed) => {
    const packet = randomPacket(rng, cmd, version, { interleave: true, beyondOracle: true });
    const ours = encode(packet, version);
    let theirs: Uint8Array;
    try {
      theirs = new Uint8Array(
        generate(toTheirs(packet) as TheirPacket, { protocolVersion: version }),
      );
    } catch (error) {
      const p = packet as unknown as Loose;
      const kind = p.cmd === "connect" && version === 5 && p.clientId === "" && !p.clean
        ? "oracle-refuses-empty-client-id"
        : p.cmd === "connect" && version === 5 && p.password && p.username === undefined
        ? "oracle-refuses-password-alone"
        : undefined;
      assert.ok(kind, `seed ${seed}: mqtt-packet refused ${show(packet)}: ${error}`);
      refused.set(kind, (refused.get(kind) ?? 0) + 1);
      return;
    }
    if (hasInterleavedUserProperties(packet)) {
      // mqtt-packet's record cannot hold names repeated non-adjacently: its bytes group them.
      interleaved++;
      assert.ok(same(decodePacket(ours, version), packet), `seed ${seed}: round trip`);
      return;
    }
    assert.equal(hex(ours), hex(theirs), `seed ${seed} v${version}: ${show(packet)}`);
    compared++;
  });
  assert.ok(compared > 3000, `${compared} byte comparisons`);
  assert.ok(interleaved > 0 && refused.size === Object.keys(ORACLE_REFUSES).length);
});

Deno.test("differential: both decoders read the same fields from the same bytes", () => {
  const kinds = new Map<string, number>();
  const cases = forCases(150, (rng, cmd, version, seed) => {
    const packet = randomPacket(rng, cmd, version, { interleave: true });
    const bytes = encode(packet, version);
    const ours = runOurs(bytes, version);
    assert.ok(ours.ok, `seed ${seed}: we rejected ${show(packet)}: ${ours.error}`);
    assert.equal(ours.packets.length, 1);
    assert.ok(same(ours.packets[0], packet), `seed ${seed}: round trip ${show(ours.packets[0])}`);
    const kind = disagreement(bytes, version);
    if (kind === undefined) return;
    assert.ok(
      kind in ORACLE_DECODES_DIFFERENTLY,
      `seed ${seed} v${version}: ${kind}\n${hex(bytes)}`,
    );
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  });
  assert.ok(cases > 4000);
  console.log(`${cases} packets; decoded differently by kind:`, Object.fromEntries(kinds));
});

/** A fixed header: `first`, then `length` as a variable byte integer. */
function header(first: number, length: number): number[] {
  const out = [first];
  do {
    out.push((length & 0x7f) | (length > 0x7f ? 0x80 : 0));
    length >>>= 7;
  } while (length > 0);
  return out;
}

/** `first` and `length` as a fixed header, followed by `body`. */
function framed(first: number, length: number, body: Uint8Array): Uint8Array {
  const head = header(first, length);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

function bodyOf(frame: Uint8Array): Uint8Array {
  let i = 1;
  while (frame[i] & 0x80) i++;
  return frame.subarray(i + 1);
}

const INTERESTING = [0, 1, 2, 3, 0x7f, 0x80, 0xff, 0x23, 0x2b, 0x26, 0x0b, 0x23, 0x1f, 0xc0];

/** One random mutation of a valid frame. */
function mutate(rng: Rng, frame: Uint8Array): Uint8Array {
  const at = () => rng.chance(0.6) ? rng.int(Math.min(frame.length, 16)) : rng.int(frame.length);
  const body = bodyOf(frame);
  switch (rng.int(7)) {
    case 0: {
      const out = frame.slice();
      out[at()] ^= 1 << rng.int(8);
      return out;
    }
    case 1:
    case 2: {
      const out = frame.slice();
      out[at()] = rng.chance(0.7) ? rng.pick(INTERESTING) : rng.int(256);
      return out;
    }
    case 3: {
      const cut = body.subarray(0, rng.int(body.length + 1));
      return framed(frame[0], cut.length, cut);
    }
    case 4: {
      const extra = rng.bytes(rng.range(1, 3));
      const out = new Uint8Array(body.length + extra.length);
      out.set(body);
      out.set(extra, body.length);
      return framed(frame[0], out.length, out);
    }
    case 5: {
      // The remaining length says a little less or more than the body holds.
      const delta = rng.chance() ? -rng.range(1, 3) : rng.range(1, 3);
      return framed(frame[0], Math.max(0, body.length + delta), body);
    }
    default:
      return frame.subarray(0, rng.int(frame.length));
  }
}

/** CODEC_EXAMPLES=1 prints a few frames of every kind of disagreement, with both verdicts. */
const EXAMPLES = Deno.env.get("CODEC_EXAMPLES") !== undefined;

function explain(kind: string, bytes: Uint8Array, version: ProtocolVersion): void {
  const verdict = (o: Outcome) =>
    o.ok ? `accepts ${show(o.packets)}` : `rejects: ${o.error!.message}`;
  console.log(`${kind} v${version} ${hex(bytes)}`);
  console.log(`  ours: ${verdict(runOurs(bytes, version))}`);
  console.log(`  mqtt-packet: ${verdict(runTheirs(bytes, version))}`);
}

Deno.test("differential: mutated frames are accepted or rejected alike, or differ in a known way", () => {
  const kinds = new Map<string, number>();
  const unexplained = new Map<string, string>();
  let mutants = 0;
  forCases(250, (rng, cmd, version, seed) => {
    let frame = encode(randomPacket(rng, cmd, version), version);
    while (frame.length > 3000) frame = encode(randomPacket(rng, cmd, version), version);
    for (let i = 0; i < 6; i++) {
      let bytes = mutate(rng, frame);
      if (rng.chance(0.2)) bytes = mutate(rng, bytes.length > 1 ? bytes : frame);
      bytes = complete(bytes);
      const kind = disagreement(bytes, version);
      mutants++;
      // Pushed in pieces, our decoder reaches the same verdict as on the whole.
      const cuts = [rng.int(bytes.length), rng.int(bytes.length)].sort((a, b) => a - b);
      const [whole, pieces] = [runOurs(bytes, version), runOurs(bytes, version, cuts)];
      assert.equal(pieces.error?.message, whole.error?.message, `seed ${seed}: ${hex(bytes)}`);
      assert.ok(isDeepStrictEqual(pieces.packets, whole.packets), `seed ${seed}: ${hex(bytes)}`);
      if (kind === undefined) continue;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      if (EXAMPLES && kinds.get(kind)! <= 3) explain(kind, bytes, version);
      if (!accepted(kind) && !unexplained.has(kind)) {
        unexplained.set(kind, `seed ${seed} v${version} ${cmd}: ${hex(bytes)}`);
      }
    }
  });
  const report = [...unexplained].map(([kind, example]) => `${kind}\n  e.g. ${example}`);
  assert.deepEqual(report, [], "unexplained disagreements with mqtt-packet");
  assert.ok(mutants > 30_000);
  console.log(`${mutants} mutants; disagreements by kind:`, Object.fromEntries(kinds));
});

Deno.test("differential: each strictness example agrees with mqtt-packet or differs as listed", () => {
  const wrong = MALFORMED.flatMap((m) => {
    const kind = disagreement(m.bytes, m.version) ?? "agree";
    return kind === m.oracle
      ? []
      : [`${m.what} (v${m.version}): expected ${m.oracle}, got ${kind}`];
  });
  assert.deepEqual(wrong, []);
  // Valid bytes mqtt-packet rejects.
  const valid: [ProtocolVersion, Uint8Array, string][] = [
    [5, Uint8Array.of(0xf0, 0), "oracle-auth-without-reason-code"], // AUTH, remaining length 0
    [5, Uint8Array.of(0xe0, 0, 0xc0, 0), "oracle-reads-past-packet"], // DISCONNECT, PINGREQ
  ];
  for (const [version, bytes, kind] of valid) {
    assert.ok(runOurs(bytes, version).ok, hex(bytes));
    assert.equal(disagreement(bytes, version), kind, hex(bytes));
  }
  // Every accepted kind has an example here, so none is listed without cause.
  const shown = new Set([...MALFORMED.map((m) => m.oracle), ...valid.map(([, , kind]) => kind)]);
  const unshown = [...Object.keys(WE_ARE_STRICTER), ...Object.keys(ORACLE_REJECTS_VALID)]
    .filter((kind) => !shown.has(kind));
  assert.deepEqual(unshown, []);
});

Deno.test("differential: every accepted kind of disagreement is documented in docs/codec.md", () => {
  const doc = Deno.readTextFileSync(new URL("../docs/codec.md", import.meta.url));
  const all = [WE_ARE_STRICTER, ORACLE_REJECTS_VALID, ORACLE_DECODES_DIFFERENTLY, ORACLE_REFUSES];
  const missing = all.flatMap(Object.keys).filter((kind) => !doc.includes(`\`${kind}\``));
  assert.deepEqual(missing, []);
});
