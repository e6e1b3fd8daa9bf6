/**
 * A broker that breaks the protocol: the client logs what was wrong, closes
 * the connection (MQTT-4.8.0-1) and reconnects through its normal loop, where
 * un-ACKed publishes are re-sent. Nothing crashes, nothing is lost.
 */

import assert from "node:assert/strict";
import { FakeBroker } from "./fake_broker.ts";
import { fakeConnected, quickClient, text, within } from "./helpers.ts";

const enc = (s: string) => [...new TextEncoder().encode(s)];

const violations: [string, number[], RegExp][] = [
  ["reserved packet type 0", [0x00, 0x00], /malformed|Not supported/],
  ["reserved packet type 15", [0xf0, 0x00], /malformed|Not supported/],
  ["a 5th remaining-length byte", [0x30, 0xff, 0xff, 0xff, 0xff, 0x01], /remaining length/],
  ["a second CONNACK", [0x20, 0x02, 0x00, 0x00], /unexpected connack/i],
  [
    "CONNECT from the broker",
    [0x10, 0x0c, 0, 4, ...enc("MQTT"), 4, 2, 0, 60, 0, 0],
    /unexpected connect/i,
  ],
  ["PINGREQ from the broker", [0xc0, 0x00], /unexpected pingreq/i],
  ["PUBACK with flag bits set", [0x41, 0x02, 0x00, 0x01], /fixed header flags/],
  ["PUBACK of the wrong length", [0x40, 0x01, 0x00], /PUBACK has remaining length 1/],
  ["PINGRESP with a body", [0xd0, 0x01, 0x00], /PINGRESP has remaining length 1/],
  ["a PUBLISH with both QoS bits set", [0x36, 0x05, 0, 1, 0x61, 0, 1], /QoS bits/],
  ["a PUBLISH topic that is not UTF-8", [0x30, 0x04, 0, 2, 0xc3, 0x28], /not well-formed UTF-8/],
  ["a PUBLISH topic with U+0000", [0x30, 0x04, 0, 2, 0x61, 0x00], /U\+0000/],
  ["a PUBLISH topic with a wildcard", [0x30, 0x04, 0, 2, 0x61, 0x23], /wildcard/],
  ["a PUBLISH whose topic overruns the frame", [0x30, 0x03, 0, 9, 0x61], /topic|malformed/],
  ["SUBSCRIBE from the broker", [0x82, 0x06, 0, 1, 0, 1, 0x61, 0], /unexpected subscribe/i],
  ["DISCONNECT from a 3.1.1 broker", [0xe0, 0x00], /DISCONNECT from broker/],
  ["packet id 0 in a PUBACK", [0x40, 0x02, 0x00, 0x00], /packet identifier 0/],
  ["a SUBACK return code 0x03", [0x90, 0x03, 0x00, 0x01, 0x03], /return code 0x3/],
  ["a frame over maxPacketSize", [0x30, 0x80, 0x80, 0x80, 0x01], /exceeds the maximum packet size/],
];

Deno.test("protocol violations close the link, are logged, and un-ACKed publishes are re-sent on the next one", async (t) => {
  await using broker = await FakeBroker.start();
  const connected = await fakeConnected(broker, { maxPacketSize: 1024 * 1024, responseTime: 30 });
  const client = connected.client;
  let conn = connected.conn;
  // A publish that stays un-ACKed through every violation below.
  const publishing = client.publish("keep", "me", { qos: 1 });
  const original = await conn.expect("publish");
  for (const [name, bytes, reason] of violations) {
    await t.step(name, async () => {
      const logLines = client.log.length;
      await conn.sendRaw(new Uint8Array(bytes));
      await within(conn.closed, 2000, `the client to close after ${name}`);
      const next = await broker.accept();
      await next.handshake({ sessionPresent: true });
      const again = await next.expect("publish");
      assert.equal(again.messageId, original.messageId);
      assert.equal(again.dup, true);
      assert.equal(text(again.payload as Uint8Array), "me");
      conn = next; // the next step goes on whatever this one found
      const logged = client.log.slice(logLines).join("\n");
      assert.match(logged, reason);
    });
  }
  await conn.send({ cmd: "puback", messageId: original.messageId! });
  await within(publishing, 2000, "the publish to complete after all that");
  await client.disconnect();
});

Deno.test("a PUBACK, SUBACK or UNSUBACK for an id not awaited is logged and ignored", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  await conn.send({ cmd: "suback", messageId: 4660, granted: [0] });
  await conn.send({ cmd: "unsuback", messageId: 4661 });
  await conn.send({ cmd: "puback", messageId: 4242 });
  const publishing = client.publish("t", "x", { qos: 1 });
  const publish = await conn.expect("publish");
  await conn.send({ cmd: "puback", messageId: publish.messageId! });
  await within(publishing, 2000, "publish on the same link");
  assert.equal(broker.connectionCount, 1, "the link survived");
  assert.ok(client.log.some((l) => l.includes("PUBACK for packet 4242, not in flight")));
  assert.ok(client.log.some((l) => l.includes("SUBACK for packet 4660, not awaited")));
  assert.ok(client.log.some((l) => l.includes("UNSUBACK for packet 4661, not awaited")));
  await client.disconnect();
});

Deno.test("a bad frame in the same read as the CONNACK fails that attempt; the client reconnects", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker);
  client.start();
  const first = await broker.accept();
  await first.expect("connect");
  await first.sendRaw(new Uint8Array([0x20, 0x02, 0x00, 0x00, 0xf0, 0x00])); // CONNACK + type 15
  const second = await broker.accept({ timeoutMs: 3000 });
  await second.handshake();
  const publishing = client.publish("t", "after", { qos: 1 });
  const publish = await second.expect("publish");
  await second.send({ cmd: "puback", messageId: publish.messageId! });
  await within(publishing, 2000, "publish on the healthy link");
  await client.disconnect();
});
