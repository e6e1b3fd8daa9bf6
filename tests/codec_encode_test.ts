/**
 * Unit tests of the encoder: its validation (bad packets are TypeError or
 * RangeError naming the problem), the PUBLISH and ack fast paths, reason
 * codes and the property table.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { generate } from "mqtt-packet";
import {
  decodePacket,
  encode,
  encodeAck,
  encodeProperties,
  encodePublish,
  isValidReasonCode,
  type Packet,
  PROPERTIES,
  type ProtocolVersion,
  reasonName,
} from "../codec/mod.ts";
import { frame, hex, Rng } from "./_codec_gen.ts";

const SEED = 7_340_002;

/** A stand-in for a 256 MiB payload: only its length is read before the check fails. */
const hugePayload = Object.setPrototypeOf({ length: 268_435_453 }, Uint8Array.prototype);

type Bad = [string, () => unknown, RegExp];
const BAD_ENCODES: Bad[] = [
  [
    "QoS 3",
    () => encodePublish("t", new Uint8Array(), 3 as 0, 1, false, false),
    /QoS must be 0, 1 or 2/,
  ],
  ["DUP at QoS 0", () => encodePublish("t", new Uint8Array(), 0, 0, false, true), /MQTT-3.3.1-2/],
  ["packet id 0", () => encodePublish("t", new Uint8Array(), 1, 0, false, false), /1..65535/],
  ["packet id 65536", () => encodeAck("puback", 65_536), /1..65535/],
  ["wildcard topic", () => encodePublish("a/#", new Uint8Array(), 0, 0, false, false), /wildcard/],
  ["empty topic 3.1.1", () => encodePublish("", new Uint8Array(), 0, 0, false, false), /empty/],
  [
    "empty topic, no alias",
    () => encodePublish("", new Uint8Array(), 0, 0, false, false, 5, {}),
    /empty/,
  ],
  ["NUL in topic", () => encodePublish("a\0", new Uint8Array(), 0, 0, false, false), /U\+0000/],
  [
    "lone surrogate",
    () => encodePublish("a\uD800", new Uint8Array(), 0, 0, false, false),
    /surrogate/,
  ],
  [
    "topic over 65535 bytes",
    () => encodePublish("é".repeat(40_000), new Uint8Array(), 0, 0, false, false),
    /65535/,
  ],
  [
    "string payload",
    () => encodePublish("t", "x" as unknown as Uint8Array, 0, 0, false, false),
    /Uint8Array/,
  ],
  [
    "properties in 3.1.1",
    () => encodePublish("t", new Uint8Array(), 0, 0, false, false, 4, { contentType: "x" }),
    /MQTT 5/,
  ],
  [
    "property of another packet",
    () => encode({ cmd: "puback", messageId: 1, properties: { topicAlias: 1 } as object }, 5),
    /not allowed in PUBACK/,
  ],
  [
    "unknown property",
    () => encode({ cmd: "disconnect", properties: { nope: 1 } as object }, 5),
    /unknown property "nope"/,
  ],
  [
    "Topic Alias 0",
    () => encodePublish("t", new Uint8Array(), 0, 0, false, false, 5, { topicAlias: 0 }),
    /1..65535/,
  ],
  [
    "Maximum QoS 2",
    () =>
      encode({
        cmd: "connack",
        sessionPresent: false,
        reasonCode: 0,
        properties: { maximumQoS: 2 as 1 },
      }, 5),
    /0..1/,
  ],
  [
    "user property not a pair",
    () =>
      encode({ cmd: "auth", reasonCode: 0, properties: { userProperties: [["a"]] as never } }, 5),
    /pairs/,
  ],
  [
    "reason code not for PUBACK",
    () => encode({ cmd: "puback", messageId: 1, reasonCode: 0x92 }, 5),
    /not valid for PUBACK/,
  ],
  [
    "reason code in 3.1.1",
    () => encode({ cmd: "pubrec", messageId: 1, reasonCode: 0x80 }, 4),
    /need MQTT 5/,
  ],
  [
    "CONNACK return code 6",
    () => encode({ cmd: "connack", sessionPresent: false, returnCode: 6 }, 4),
    /0..5/,
  ],
  [
    "session present with an error",
    () => encode({ cmd: "connack", sessionPresent: true, returnCode: 5 }, 4),
    /MQTT-3.2.2-4/,
  ],
  ["SUBACK code 3", () => encode({ cmd: "suback", messageId: 1, granted: [3] }, 4), /MQTT-3.9.3-2/],
  [
    "empty SUBSCRIBE",
    () => encode({ cmd: "subscribe", messageId: 1, subscriptions: [] }, 4),
    /at least one/,
  ],
  [
    "filter a#",
    () => encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a#", qos: 0 }] }, 4),
    /"#" must/,
  ],
  [
    "filter a+/b",
    () => encode({ cmd: "unsubscribe", messageId: 1, unsubscriptions: ["a+/b"] }, 4),
    /"\+" must/,
  ],
  [
    "nl in 3.1.1",
    () =>
      encode(
        { cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a", qos: 0, nl: true }] },
        4,
      ),
    /MQTT 5/,
  ],
  [
    "nl on $share",
    () =>
      encode({
        cmd: "subscribe",
        messageId: 1,
        subscriptions: [{ topic: "$share/g/a", qos: 0, nl: true }],
      }, 5),
    /MQTT-3.8.3-4/,
  ],
  ["AUTH in 3.1.1", () => encode({ cmd: "auth", reasonCode: 0 }, 4), /only in MQTT 5/],
  [
    "CONNECT level mismatch",
    () =>
      encode({ cmd: "connect", protocolVersion: 5, clientId: "", clean: true, keepalive: 0 }, 4),
    /declares/,
  ],
  [
    "password alone in 3.1.1",
    () =>
      encode({
        cmd: "connect",
        protocolVersion: 4,
        clientId: "c",
        clean: true,
        keepalive: 0,
        password: new Uint8Array(),
      }, 4),
    /MQTT-3.1.2-22/,
  ],
  [
    "empty client id, clean 0",
    () =>
      encode({ cmd: "connect", protocolVersion: 4, clientId: "", clean: false, keepalive: 0 }, 4),
    /MQTT-3.1.3-7/,
  ],
  [
    "keepalive 65536",
    () =>
      encode(
        { cmd: "connect", protocolVersion: 4, clientId: "c", clean: true, keepalive: 65_536 },
        4,
      ),
    /keepalive/,
  ],
  [
    "auth data alone",
    () =>
      encode({
        cmd: "auth",
        reasonCode: 0x18,
        properties: { authenticationData: new Uint8Array() },
      }, 5),
    /without authenticationMethod/,
  ],
  [
    "remaining length over the maximum",
    () => encodePublish("t", hugePayload, 0, 0, false, false),
    /exceeds 268435455/,
  ],
  ["unknown cmd", () => encode({ cmd: "nope" } as unknown as Packet, 4), /unknown packet cmd/],
  ["version 3", () => encode({ cmd: "pingreq" }, 3 as ProtocolVersion), /4 or 5/],
];

Deno.test("encode validates: bad packets are TypeError or RangeError naming the problem", () => {
  for (const [what, run, message] of BAD_ENCODES) {
    assert.throws(
      run,
      (e: Error) => (e instanceof TypeError || e instanceof RangeError) && message.test(e.message),
      what,
    );
  }
});

Deno.test("encodePublish: 3.1.1 frames byte for byte as mqtt-packet writes them", () => {
  const rng = new Rng(SEED);
  for (let i = 0; i < 500; i++) {
    const topic = rng.pick(["t", "a/b", "é/日本", "x".repeat(300)]);
    const payload = rng.bytes(rng.pick([0, 5, 127, 128, 16_383, 16_384]));
    const qos = rng.int(3) as 0 | 1 | 2;
    const [id, retain, dup] = [rng.range(1, 65_535), rng.chance(), qos > 0 && rng.chance()];
    const theirs = generate({
      cmd: "publish",
      topic,
      payload: Buffer.from(payload),
      qos,
      messageId: qos > 0 ? id : undefined,
      retain,
      dup,
    });
    assert.deepEqual(encodePublish(topic, payload, qos, id, retain, dup), new Uint8Array(theirs));
  }
});

Deno.test("encodePublish: QoS 2 and MQTT 5, a properties object or a pre-encoded block alike", () => {
  const payload = new Uint8Array([7, 8]);
  const props = {
    contentType: "text/plain",
    userProperties: [["a", "1"], ["b", "2"], ["a", "3"]] as [string, string][],
  };
  const block = encodeProperties("publish", props);
  const viaObject = encodePublish("s/1", payload, 2, 300, true, true, 5, props);
  assert.deepEqual(encodePublish("s/1", payload, 2, 300, true, true, 5, block), viaObject);
  assert.deepEqual(decodePacket(viaObject, 5), {
    cmd: "publish",
    topic: "s/1",
    payload,
    qos: 2,
    retain: true,
    dup: true,
    messageId: 300,
    properties: props,
  });
  const aliased = encodePublish(
    "",
    payload,
    0,
    0,
    false,
    false,
    5,
    encodeProperties("publish", { topicAlias: 4 }),
  );
  assert.equal(hex(aliased), "30 08 00 00 03 23 00 04 07 08");
  assert.deepEqual(encodePublish("t", payload, 0, 0, false, false, 5), frame(0x30, "t", 0, 7, 8));
});

Deno.test("encodeAck: 4 bytes for each ack type, read the same by both versions", () => {
  const first = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 } as const;
  for (const [cmd, byte] of Object.entries(first) as [keyof typeof first, number][]) {
    const bytes = encodeAck(cmd, 0xabcd);
    assert.deepEqual(bytes, Uint8Array.of(byte, 2, 0xab, 0xcd));
    assert.deepEqual(decodePacket(bytes, 4), { cmd, messageId: 0xabcd });
    assert.deepEqual(decodePacket(bytes, 5), { cmd, messageId: 0xabcd, reasonCode: 0 });
    assert.deepEqual(encode({ cmd, messageId: 0xabcd, reasonCode: 0 }, 5), bytes);
  }
  assert.throws(() => encodeAck("suback" as "puback", 1), TypeError);
});

Deno.test("reason codes: names, and the codes each packet may carry", () => {
  assert.equal(reasonName(0x87), "Not authorized");
  assert.equal(reasonName(0x97), "Quota exceeded");
  assert.equal(reasonName(0x00, "disconnect"), "Normal disconnection");
  assert.equal(reasonName(0x00, "suback"), "Granted QoS 0");
  assert.equal(reasonName(0x00), "Success");
  assert.equal(reasonName(0x42), "Unknown reason code 0x42");
  assert.ok(isValidReasonCode("pubrel", 0x92) && !isValidReasonCode("puback", 0x92));
  assert.ok(isValidReasonCode("auth", 0x18) && !isValidReasonCode("auth", 0x80));
  assert.ok(isValidReasonCode("connack", 0x9f) && !isValidReasonCode("connack", 0x04));
});

Deno.test("properties table: identifiers unique, each allowed somewhere, repeatable ones marked", () => {
  const ids = PROPERTIES.map((p) => p.id);
  assert.equal(new Set(ids).size, 27);
  assert.ok(PROPERTIES.every((p) => p.allowed.length > 0));
  assert.deepEqual(PROPERTIES.filter((p) => p.repeatable).map((p) => p.name), ["userProperties"]);
  assert.equal(encodeProperties("disconnect", undefined).length, 1);
});
