/**
 * QoS 2 against the scripted fake broker with each acknowledgement withheld
 * in turn, for 3.1.1 and 5: the client declares the link dead after
 * `responseTime`, reconnects, and resumes the exchange at the right step
 * (PUBLISH with DUP before PUBREC, PUBREL after it, never the PUBLISH again);
 * incoming, a withheld PUBREL makes the broker re-send and the handler still
 * runs once.
 */

import assert from "node:assert/strict";
import { FakeBroker, type FakeConnection } from "./fake_broker.ts";
import { quickClient, text, until, within } from "./helpers.ts";

const VERSIONS = [4, 5] as const;

async function session(broker: FakeBroker, sessionPresent: boolean): Promise<FakeConnection> {
  const conn = await broker.accept();
  conn.autoPingresp();
  await conn.handshake({ sessionPresent });
  return conn;
}

/** Every PUBLISH and PUBREL the client wrote, as `cmd id dup`, in order. */
function clientWrites(broker: FakeBroker): string[] {
  return broker.frames
    .filter((f) =>
      f.direction === "toBroker" && (f.packet?.cmd === "publish" || f.packet?.cmd === "pubrel")
    )
    .map((f) => {
      const p = f.packet as { cmd: string; messageId?: number; dup?: boolean };
      return `${p.cmd} ${p.messageId}${p.dup ? " dup" : ""}`;
    });
}

for (const version of VERSIONS) {
  Deno.test(`QoS 2 v${version}: PUBREC withheld: the PUBLISH goes again with its id and DUP, then PUBREL`, async () => {
    await using broker = await FakeBroker.start();
    const client = quickClient(broker, { protocolVersion: version, responseTime: 0.3 });
    try {
      const connecting = client.connect();
      const first = await session(broker, false);
      await connecting;
      const done = client.publish("q2/a", "one", { qos: 2 });
      const publish = await first.expect("publish");
      assert.equal(publish.qos, 2);
      assert.equal(publish.dup, false);
      // No PUBREC: the client must give up on this link by itself.
      await within(first.closed, 3000, "the client to close the silent link");
      const second = await session(broker, true);
      const again = await second.expect("publish");
      assert.equal(again.messageId, publish.messageId);
      assert.equal(again.dup, true);
      assert.equal(text(again.payload), "one");
      await second.send({ cmd: "pubrec", messageId: publish.messageId });
      assert.equal((await second.expect("pubrel")).messageId, publish.messageId);
      await second.send({ cmd: "pubcomp", messageId: publish.messageId });
      await within(done, 3000, "the publish to resolve");
      const id = publish.messageId;
      assert.deepEqual(clientWrites(broker), [
        `publish ${id}`,
        `publish ${id} dup`,
        `pubrel ${id}`,
      ]);
    } finally {
      await client.disconnect();
    }
  });

  Deno.test(`QoS 2 v${version}: PUBCOMP withheld: PUBREL goes again, never the PUBLISH`, async () => {
    await using broker = await FakeBroker.start();
    const client = quickClient(broker, { protocolVersion: version, responseTime: 0.3 });
    try {
      const connecting = client.connect();
      const first = await session(broker, false);
      await connecting;
      const done = client.publish("q2/b", "two", { qos: 2 });
      const publish = await first.expect("publish");
      await first.send({ cmd: "pubrec", messageId: publish.messageId });
      assert.equal((await first.expect("pubrel")).messageId, publish.messageId);
      // No PUBCOMP.
      await within(first.closed, 3000, "the client to close the silent link");
      const second = await session(broker, true);
      const rel = await second.expect("pubrel");
      assert.equal(rel.messageId, publish.messageId);
      await second.send({ cmd: "pubcomp", messageId: publish.messageId });
      await within(done, 3000, "the publish to resolve");
      const id = publish.messageId;
      assert.deepEqual(clientWrites(broker), [`publish ${id}`, `pubrel ${id}`, `pubrel ${id}`]);
    } finally {
      await client.disconnect();
    }
  });

  Deno.test(`QoS 2 v${version}: PUBREC withheld twice in a row: still one PUBLISH per connection, same id`, async () => {
    await using broker = await FakeBroker.start();
    const client = quickClient(broker, { protocolVersion: version, responseTime: 0.3 });
    try {
      const connecting = client.connect();
      const first = await session(broker, false);
      await connecting;
      const done = client.publish("q2/c", "three", { qos: 2 });
      const publish = await first.expect("publish");
      await within(first.closed, 3000, "the first link to be dropped");
      const second = await session(broker, true);
      assert.equal((await second.expect("publish")).messageId, publish.messageId);
      await within(second.closed, 3000, "the second link to be dropped");
      const third = await session(broker, true);
      assert.equal((await third.expect("publish")).messageId, publish.messageId);
      await third.send({ cmd: "pubrec", messageId: publish.messageId });
      await third.expect("pubrel");
      await third.send({ cmd: "pubcomp", messageId: publish.messageId });
      await within(done, 3000, "the publish to resolve");
      const id = publish.messageId;
      assert.deepEqual(clientWrites(broker), [
        `publish ${id}`,
        `publish ${id} dup`,
        `publish ${id} dup`,
        `pubrel ${id}`,
      ]);
    } finally {
      await client.disconnect();
    }
  });

  Deno.test(`QoS 2 v${version}: incoming, PUBREL withheld and the link cut: the re-sent PUBLISH is not delivered again`, async () => {
    await using broker = await FakeBroker.start();
    const seen: string[] = [];
    const client = quickClient(broker, {
      protocolVersion: version,
      onMessage: (_topic, payload) => void seen.push(text(payload)),
    });
    try {
      const connecting = client.connect();
      const first = await session(broker, false);
      await connecting;
      await first.send({ cmd: "publish", topic: "in/x", payload: "once", qos: 2, messageId: 7 });
      assert.equal((await first.expect("pubrec")).messageId, 7);
      // The broker withholds PUBREL and the link goes down.
      first.close();
      const second = await session(broker, true);
      await second.send({
        cmd: "publish",
        topic: "in/x",
        payload: "once",
        qos: 2,
        messageId: 7,
        dup: true,
      });
      assert.equal((await second.expect("pubrec")).messageId, 7, "answered, not delivered");
      await second.send({ cmd: "pubrel", messageId: 7 });
      assert.equal((await second.expect("pubcomp")).messageId, 7);
      // The id is free again: the same id now carries a new message, delivered.
      await second.send({ cmd: "publish", topic: "in/x", payload: "next", qos: 2, messageId: 7 });
      assert.equal((await second.expect("pubrec")).messageId, 7);
      await until(() => seen.length === 2, 3000, "the second message");
      assert.deepEqual(seen, ["once", "next"]);
    } finally {
      await client.disconnect();
    }
  });
}
