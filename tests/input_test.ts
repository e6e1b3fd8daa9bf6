/**
 * Bad user input is rejected before a single byte is sent, with a TypeError or
 * RangeError naming the problem; the connection and earlier accepted messages
 * stay intact.
 */

import assert from "node:assert/strict";
import { FakeBroker } from "./fake_broker.ts";
import { captureLogger, fakeConnected, text, within } from "./helpers.ts";
import { MQTTClient, type MQTTClientOptions } from "../mod.ts";

type Call = (client: MQTTClient) => Promise<unknown>;

const long = "x".repeat(65_536);
const bad: [string, Call, ErrorConstructor, RegExp][] = [
  ["empty publish topic", (c) => c.publish("", "x"), TypeError, /must not be empty/],
  ["'+' in a publish topic", (c) => c.publish("a/+/b", "x"), TypeError, /wildcards/],
  ["'#' in a publish topic", (c) => c.publish("a/#", "x"), TypeError, /wildcards.*"a\/#"/],
  ["U+0000 in a topic", (c) => c.publish("a\u0000b", "x"), TypeError, /U\+0000/],
  ["topic over 65535 bytes", (c) => c.publish(long, "x"), RangeError, /65536 UTF-8 bytes/],
  [
    "multi-byte topic over 65535 bytes",
    (c) => c.publish("é".repeat(32_768), "x"),
    RangeError,
    /65536 UTF-8 bytes/,
  ],
  [
    "topic not a string",
    (c) => c.publish(42 as never, "x"),
    TypeError,
    /must be a string, got number/,
  ],
  ["payload a number", (c) => c.publish("t", 42 as never), TypeError, /payload.*got number/],
  ["payload an object", (c) => c.publish("t", {} as never), TypeError, /payload.*got object/],
  ["QoS 3", (c) => c.publish("t", "x", { qos: 3 as never }), RangeError, /QoS must be 0, 1 or 2/],
  [
    "QoS 7",
    (c) => c.publish("t", "x", { qos: 7 as never }),
    RangeError,
    /QoS must be 0, 1 or 2, got number 7/,
  ],
  ["retain not boolean", (c) => c.publish("t", "x", { retain: 1 as never }), TypeError, /retain/],
  ["sync not boolean", (c) => c.publish("t", "x", { sync: "no" as never }), TypeError, /sync/],
  ["empty filter", (c) => c.subscribe(""), TypeError, /must not be empty/],
  ["'#' not last", (c) => c.subscribe("a/#/b"), TypeError, /"#" only as the whole last level/],
  ["'#' inside a level", (c) => c.subscribe("a/b#"), TypeError, /"#" only/],
  ["'+' inside a level", (c) => c.subscribe("a/b+/c"), TypeError, /"\+" only as a whole level/],
  ["filter over 65535 bytes", (c) => c.subscribe(long), RangeError, /65536 UTF-8 bytes/],
  ["subscribe QoS 3", (c) => c.subscribe("a", 3 as never), RangeError, /QoS must be 0, 1 or 2/],
  [
    "MQTT 5 properties on a 3.1.1 client",
    (c) => c.publish("t", "x", { properties: { contentType: "text/plain" } }),
    TypeError,
    /need an MQTT 5 client/,
  ],
  [
    "MQTT 5 subscription options on a 3.1.1 client",
    (c) => c.subscribe("a", { qos: 1, noLocal: true }),
    TypeError,
    /noLocal needs an MQTT 5 client/,
  ],
  [
    "a shared subscription without a group",
    (c) => c.subscribe("$share//a", 1),
    TypeError,
    /empty shared/,
  ],
  [
    "a shared subscription with a wildcard group",
    (c) => c.subscribe("$share/+/a", 1),
    TypeError,
    /wildcards/,
  ],
  [
    "a shared subscription without a filter",
    (c) => c.subscribe("$share/g", 1),
    TypeError,
    /without a filter/,
  ],
  ["unsubscribe bad filter", (c) => c.unsubscribe("a/#/b"), TypeError, /"#"/],
];

Deno.test("bad publish/subscribe input: a clear error, nothing on the wire, the connection intact", async (t) => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  // One accepted, un-ACKed message that bad input must not disturb.
  const accepted = client.publish("ok", "before", { qos: 1 });
  const before = await conn.expect("publish");
  for (const [name, call, type, message] of bad) {
    await t.step(name, async () => {
      const framesBefore = broker.frames.length;
      const error = await within(call(client).catch((e) => e), 1000, name);
      assert.ok(error instanceof type, `${name}: expected ${type.name}, got ${error}`);
      assert.match(error.message, message);
      assert.equal(broker.frames.length, framesBefore, `${name}: a frame was sent`);
    });
  }
  await conn.send({ cmd: "puback", messageId: before.messageId! });
  await within(accepted, 1000, "the earlier publish");
  const after = client.publish("ok", "after", { qos: 1 });
  const next = await conn.expect("publish");
  assert.equal(text(next.payload as Uint8Array), "after");
  await conn.send({ cmd: "puback", messageId: next.messageId! });
  await within(after, 1000, "a valid publish right after");
  assert.ok(client.isConnected());
  await client.disconnect();
});

const base: MQTTClientOptions = { server: "127.0.0.1", logger: captureLogger() };
const badConfig: [string, Partial<MQTTClientOptions> | null, ErrorConstructor, RegExp][] = [
  ["no options", null, TypeError, /options object/],
  ["no server", { server: undefined as never }, TypeError, /server/],
  ["empty server", { server: "" }, TypeError, /server/],
  ["port 70000", { port: 70_000 }, RangeError, /port.*70000/],
  ["port -1", { port: -1 }, RangeError, /port/],
  ["keepalive 65536", { keepalive: 65_536 }, RangeError, /keepalive.*65536/],
  ["keepalive 1.5", { keepalive: 1.5 }, RangeError, /keepalive/],
  ["responseTime 0", { responseTime: 0 }, RangeError, /responseTime/],
  ["responseTime -1", { responseTime: -1 }, RangeError, /responseTime/],
  ["maxInflight 0", { maxInflight: 0 }, RangeError, /maxInflight/],
  ["maxInflight 65536", { maxInflight: 65_536 }, RangeError, /maxInflight/],
  ["clientId over 65535 bytes", { clientId: long }, RangeError, /clientId.*65536/],
  [
    "empty clientId with clean: false",
    { clientId: "", clean: false },
    RangeError,
    /MQTT-3\.1\.3-7/,
  ],
  ["will without topic", { will: { payload: "x" } as never }, TypeError, /will topic/],
  ["will with a wildcard", { will: { topic: "a/#", payload: "x" } }, TypeError, /will topic/],
  ["will QoS 3", { will: { topic: "a", payload: "x", qos: 3 as never } }, RangeError, /will qos/],
  [
    "clean: false without a clientId",
    { clean: false, clientId: undefined },
    TypeError,
    /clientId is required with clean: false/,
  ],
  ["protocol version 3", { protocolVersion: 3 as never }, RangeError, /protocolVersion must be 4/],
  [
    "sessionExpiry on 3.1.1",
    { sessionExpiry: 10, clientId: "x" },
    TypeError,
    /needs protocolVersion: 5/,
  ],
  ["a URL with an unknown scheme", { server: "http://broker" }, TypeError, /unsupported scheme/],
  ["a URL with credentials", { server: "mqtt://u:p@broker" }, TypeError, /credentials/],
  ["password without user", { password: "p" }, TypeError, /password needs option user/],
  ["clean not boolean", { clean: "yes" as never }, TypeError, /clean/],
  ["onMessage not a function", { onMessage: 5 as never }, TypeError, /onMessage/],
  [
    "logger without warn",
    { logger: { debug() {}, info() {}, error() {} } as never },
    TypeError,
    /logger.*warn/,
  ],
  ["tls cert without key", { tls: { cert: "PEM" } }, TypeError, /both cert and key/],
  ["tls caCerts not an array", { tls: { caCerts: "PEM" as never } }, TypeError, /caCerts/],
  [
    "tls hostname differing from server with a client certificate",
    { tls: { cert: "c", key: "k", hostname: "other" } },
    TypeError,
    /tls\.hostname/,
  ],
  [
    "tls settings with a wss:// server (the WebSocket API cannot take them)",
    { server: "wss://broker.example/mqtt", tls: { caCerts: ["PEM"] } },
    TypeError,
    /tls\.caCerts cannot apply to the WebSocket server wss:\/\/broker\.example/,
  ],
  [
    "reconnect delays inverted",
    { reconnect: { initialDelay: 5, maxDelay: 1 } },
    RangeError,
    /maxDelay/,
  ],
];

for (const [name, override, type, message] of badConfig) {
  Deno.test(`bad config is refused before connecting: ${name}`, () => {
    const options = override === null ? null : { ...base, ...override };
    assert.throws(() => new MQTTClient(options as MQTTClientOptions), (error: Error) => {
      assert.ok(error instanceof type, `expected ${type.name}, got ${error}`);
      assert.match(error.message, message);
      return true;
    });
  });
}

Deno.test("a clientId over 23 characters is allowed, with a debug note", () => {
  const logger = captureLogger();
  const client = new MQTTClient({ ...base, clientId: "a-rather-long-client-identifier", logger });
  assert.equal(client.clientId, "a-rather-long-client-identifier");
  assert.ok(logger.lines.some((l) => l.startsWith("debug:") && l.includes("23")));
});

Deno.test("an empty clientId is allowed with clean: true (the broker assigns one)", () => {
  assert.equal(new MQTTClient({ ...base, clientId: "", clean: true }).clientId, "");
});
