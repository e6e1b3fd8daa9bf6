/**
 * Encode and decode speed of the codec per packet type, against mqtt-packet,
 * plus the PUBLISH hot path against the old `publish_codec.ts`.
 *
 * ```sh
 * deno run -A bench/codec_bench.ts            # full run (~1 min)
 * deno run -A bench/codec_bench.ts --quick    # shorter rounds
 * ```
 *
 * Each cell is the best of 7 rounds of about 100 ms (30 ms with --quick; each
 * round includes its garbage collection), in nanoseconds per packet; "x" is
 * mqtt-packet's time over ours (above 1: ours is faster). Decoding pushes a
 * chunk of 200 copies of the frame, as a busy socket delivers them, and
 * divides by 200. Not a test.
 */

import { Buffer } from "node:buffer";
import { generate, type Packet as TheirPacket, parser } from "mqtt-packet";
import {
  encode,
  encodeAck,
  encodeProperties,
  encodePublish,
  type Packet,
  PacketDecoder,
  type ProtocolVersion,
  type PublishPacket,
  type PublishProperties,
} from "../codec/mod.ts";

const quick = Deno.args.includes("--quick");
const ROUND_MS = quick ? 30 : 100;
const ROUNDS = 7;
let sink = 0;

/** Best ns per operation of `fn` (which does `per` operations per call) over the rounds. */
function measure(fn: () => void, per = 1): number {
  let n = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < n; i++) fn();
    if (performance.now() - start > ROUND_MS / 4) break;
    n *= 2;
  }
  n *= 4;
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const start = performance.now();
    for (let i = 0; i < n; i++) fn();
    times.push(((performance.now() - start) * 1e6) / (n * per));
  }
  return Math.min(...times);
}

/** Our packet as mqtt-packet takes it: Buffers, user properties as a record. */
function toTheirs(value: unknown, key = ""): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (Array.isArray(value)) {
    if (key !== "userProperties") return value.map((v) => toTheirs(v));
    return Object.fromEntries(value as [string, string][]);
  }
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toTheirs(v, k)]));
  }
  return value;
}

const payload100 = new Uint8Array(100).fill(0x61);
const payload16k = new Uint8Array(16_384).fill(0x62);
const user: [string, string][] = [["trace", "abc123"]];

const CASES: [string, Packet, ProtocolVersion][] = [
  ["connect", {
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 4,
    clientId: "bench-client-01",
    clean: true,
    keepalive: 60,
    username: "user",
    password: new TextEncoder().encode("secret"),
    will: { topic: "clients/bench/status", payload: new Uint8Array(7), qos: 1, retain: true },
  }, 4],
  ["connect", {
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 5,
    clientId: "bench-client-01",
    clean: true,
    keepalive: 60,
    properties: { sessionExpiryInterval: 300, receiveMaximum: 100, userProperties: user },
  }, 5],
  ["connack", { cmd: "connack", sessionPresent: false, returnCode: 0 }, 4],
  ["connack", {
    cmd: "connack",
    sessionPresent: false,
    reasonCode: 0,
    properties: {
      topicAliasMaximum: 10,
      assignedClientIdentifier: "auto-1",
      retainAvailable: true,
    },
  }, 5],
  ["publish 100 B QoS 0", pub(0, payload100), 4],
  ["publish 100 B QoS 1", pub(1, payload100), 4],
  ["publish 16 KiB QoS 1", pub(1, payload16k), 4],
  ["publish 100 B QoS 1", pub(1, payload100), 5],
  [
    "publish 100 B +props",
    pub(2, payload100, {
      messageExpiryInterval: 60,
      contentType: "text/plain",
      userProperties: user,
    }),
    5,
  ],
  ["puback", { cmd: "puback", messageId: 1234 }, 4],
  ["puback", { cmd: "puback", messageId: 1234, reasonCode: 0 }, 5],
  ["pubrec 0x10", { cmd: "pubrec", messageId: 1234, reasonCode: 0x10 }, 5],
  ["pubrel", { cmd: "pubrel", messageId: 1234 }, 4],
  ["pubcomp", { cmd: "pubcomp", messageId: 1234 }, 4],
  ["subscribe", {
    cmd: "subscribe",
    messageId: 7,
    subscriptions: [{ topic: "sensors/+/temp", qos: 1 }, { topic: "alerts/#", qos: 2 }],
  }, 4],
  ["subscribe", {
    cmd: "subscribe",
    messageId: 7,
    subscriptions: [{ topic: "sensors/+/temp", qos: 1, nl: true, rap: false, rh: 1 }],
    properties: { subscriptionIdentifier: 42 },
  }, 5],
  ["suback", { cmd: "suback", messageId: 7, granted: [1, 2] }, 4],
  ["suback", { cmd: "suback", messageId: 7, granted: [1, 0x87] }, 5],
  ["unsubscribe", { cmd: "unsubscribe", messageId: 8, unsubscriptions: ["sensors/+/temp"] }, 4],
  ["unsuback", { cmd: "unsuback", messageId: 8, granted: [] }, 4],
  ["unsuback", { cmd: "unsuback", messageId: 8, granted: [0, 0x11] }, 5],
  ["pingreq", { cmd: "pingreq" }, 4],
  ["pingresp", { cmd: "pingresp" }, 4],
  ["disconnect", { cmd: "disconnect" }, 4],
  ["disconnect", { cmd: "disconnect", reasonCode: 0x8e, properties: { reasonString: "bye" } }, 5],
  ["auth", {
    cmd: "auth",
    reasonCode: 0x18,
    properties: { authenticationMethod: "SCRAM-SHA-1", authenticationData: new Uint8Array(32) },
  }, 5],
];

function pub(qos: 0 | 1 | 2, payload: Uint8Array, properties?: PublishProperties): PublishPacket {
  const packet: PublishPacket = {
    cmd: "publish",
    topic: "sensors/7/temp",
    payload,
    qos,
    retain: false,
    dup: false,
  };
  if (qos) packet.messageId = 4321;
  if (properties) packet.properties = properties;
  return packet;
}

function row(cells: (string | number)[]): string {
  return "| " + cells.map((c) => typeof c === "number" ? fmt(c) : c).join(" | ") + " |";
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function ratio(theirs: number, ours: number): string {
  return (theirs / ours).toFixed(1) + "x";
}

const BATCH = 200;

function batch(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(frame.length * BATCH);
  for (let i = 0; i < BATCH; i++) out.set(frame, i * frame.length);
  return out;
}

console.log(`Deno ${Deno.version.deno}, V8 ${Deno.version.v8}; ns per packet, best of ${ROUNDS}`);
console.log();
console.log(
  row(["packet", "v", "encode ours", "mqtt-packet", "x", "decode ours", "mqtt-packet", "x"]),
);
console.log(row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"]));
for (const [name, packet, version] of CASES) {
  const theirs = toTheirs(packet) as TheirPacket;
  const opts = { protocolVersion: version };
  const encOurs = measure(() => sink += encode(packet, version).length);
  const encTheirs = measure(() => sink += generate(theirs, opts).length);
  const chunk = batch(encode(packet, version));
  const decoder = new PacketDecoder({ protocolVersion: version });
  const onPacket = (p: Packet) => sink += p.cmd.length;
  const decOurs = measure(() => decoder.push(chunk, onPacket), BATCH);
  const theirParser = parser(opts);
  theirParser.on("packet", (p) => sink += p.cmd.length);
  const buffer = Buffer.from(chunk);
  const decTheirs = measure(() => theirParser.parse(buffer), BATCH);
  console.log(
    row([
      name,
      String(version),
      encOurs,
      encTheirs,
      ratio(encTheirs, encOurs),
      decOurs,
      decTheirs,
      ratio(decTheirs, decOurs),
    ]),
  );
}

// The hot path, positional, against the encoder it replaces.
type OldEncode = (
  topic: string,
  payload: Uint8Array,
  qos: 0 | 1,
  id: number,
  retain: boolean,
  dup: boolean,
) => Uint8Array;
let oldEncode: OldEncode | undefined;
try {
  oldEncode = (await import("../publish_codec.ts")).encodePublish as OldEncode;
} catch {
  oldEncode = undefined; // removed since: the comparison row is skipped
}

console.log();
console.log(row(["hot path (ns/op)", "ours", "old publish_codec.ts", "mqtt-packet generate"]));
console.log(row(["---", "---:", "---:", "---:"]));
const props5 = encodeProperties("publish", { contentType: "text/plain" });
const hot: [string, () => number, (() => number) | undefined, () => number][] = [];
for (const [label, payload] of [["100 B", payload100], ["16 KiB", payload16k]] as const) {
  for (const qos of [0, 1] as const) {
    const id = qos ? 4321 : 0;
    const theirs = toTheirs(pub(qos, payload)) as TheirPacket;
    hot.push([
      `encodePublish ${label} QoS ${qos}`,
      () => encodePublish("sensors/7/temp", payload, qos, id, false, false).length,
      oldEncode && (() => oldEncode!("sensors/7/temp", payload, qos, id, false, false).length),
      () => generate(theirs).length,
    ]);
  }
}
const theirs5 = toTheirs(pub(1, payload100, { contentType: "text/plain" }));
hot.push([
  "encodePublish 100 B QoS 1 v5 +block",
  () => encodePublish("sensors/7/temp", payload100, 1, 4321, false, false, 5, props5).length,
  undefined,
  () => generate(theirs5 as TheirPacket, { protocolVersion: 5 }).length,
]);
const ackTheirs = { cmd: "puback", messageId: 4321 } as TheirPacket;
hot.push([
  "encodeAck puback",
  () => encodeAck("puback", 4321).length,
  undefined,
  () => generate(ackTheirs).length,
]);
for (const [label, ours, old, theirs] of hot) {
  const o = measure(() => sink += ours());
  const p = old ? measure(() => sink += old()) : NaN;
  const t = measure(() => sink += theirs());
  console.log(row([label, o, Number.isNaN(p) ? "-" : p, t]));
}
if (sink === 42) console.log(sink);
