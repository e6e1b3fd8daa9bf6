/** The Deno-idiomatic API: messages() iterator, on() handlers, AbortSignal, `await using`. */

import assert from "node:assert/strict";
import { FakeBroker, type FakeConnection } from "./fake_broker.ts";
import { fakeConnected, quickClient, text, until, within } from "./helpers.ts";
import type { Message, MQTTClient } from "../mod.ts";

let nextId = 100;
function deliver(conn: FakeConnection, topic: string, payload: string, qos: 0 | 1 = 1) {
  return conn.send({
    cmd: "publish",
    topic,
    payload: new TextEncoder().encode(payload) as never,
    qos,
    messageId: qos === 1 ? nextId++ : undefined,
    retain: false,
    dup: false,
  });
}

Deno.test("messages(filter) yields only matching messages, in order", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const seen: string[] = [];
  const consumer = (async () => {
    for await (const m of client.messages("sensors/+/temp")) {
      seen.push(`${m.topic}=${text(m.payload)}`);
      if (seen.length === 2) break;
    }
  })();
  await deliver(conn, "sensors/1/temp", "20");
  await deliver(conn, "sensors/1/humidity", "40");
  await deliver(conn, "sensors/2/temp", "21");
  await within(consumer, 2000, "two matching messages");
  assert.deepEqual(seen, ["sensors/1/temp=20", "sensors/2/temp=21"]);
  await client.disconnect();
});

Deno.test("messages(): a QoS 1 message is acknowledged only after the consumer pulled it", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const iterator = client.messages();
  await deliver(conn, "a", "1");
  // Round trip proves the client had the message and still did not acknowledge it.
  await client.publish("probe", "");
  await conn.expect("publish");
  assert.equal(broker.framesOf("puback", "toBroker").length, 0, "acknowledged before the pull");
  const first = await within(iterator.next(), 2000, "the first message");
  assert.equal(text((first.value as Message).payload), "1");
  await conn.expect("puback");
  await iterator.return!();
  await client.disconnect();
});

Deno.test("messages(): a slow consumer makes the client stop reading once its buffer is full", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const iterator = client.messages();
  for (let i = 0; i < 300; i++) await deliver(conn, "flood", `${i}`);
  // Nothing pulled: at most a small buffer is taken off the socket; no PUBACK left.
  await client.publish("probe", "");
  assert.equal(broker.framesOf("puback", "toBroker").length, 0);
  const got: string[] = [];
  for (let i = 0; i < 300; i++) {
    const result = await within(iterator.next(), 2000, `message ${i}`);
    got.push(text((result.value as Message).payload));
  }
  assert.deepEqual(got, Array.from({ length: 300 }, (_, i) => `${i}`));
  await broker.waitFor(() => broker.framesOf("puback", "toBroker").length === 300, {
    what: "300 PUBACKs after the pulls",
  });
  await iterator.return!();
  await client.disconnect();
});

Deno.test("messages(): break, return and abort unregister the iterator; others keep receiving", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const controller = new AbortController();
  const aborted = client.messages(undefined, { signal: controller.signal });
  const kept = client.messages();
  const broken = (async () => {
    for await (const _ of client.messages()) break;
  })();
  await deliver(conn, "x", "1", 0);
  await within(broken, 2000, "the breaking loop");
  controller.abort();
  assert.deepEqual(await aborted.next(), { value: undefined, done: true });
  await deliver(conn, "x", "2", 1);
  assert.equal(text(((await kept.next()).value as Message).payload), "1");
  assert.equal(text(((await kept.next()).value as Message).payload), "2");
  // Only `kept` holds the QoS 1 message: the PUBACK goes out after its pull.
  await conn.expect("puback");
  await kept.return!();
  await client.disconnect();
});

Deno.test("messages() keeps working across a reconnect", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const iterator = client.messages("t/#");
  await deliver(conn, "t/a", "before");
  assert.equal(text(((await iterator.next()).value as Message).payload), "before");
  conn.close();
  const conn2 = await broker.accept();
  await conn2.handshake({ sessionPresent: true });
  await deliver(conn2, "t/b", "after");
  assert.equal(text(((await iterator.next()).value as Message).payload), "after");
  await conn2.expect("puback");
  await iterator.return!();
  await client.disconnect();
});

Deno.test("disconnect() ends every messages() loop", async () => {
  await using broker = await FakeBroker.start();
  const { client } = await fakeConnected(broker);
  const loop = (async () => {
    let n = 0;
    for await (const _ of client.messages()) n++;
    return n;
  })();
  await client.disconnect();
  assert.equal(await within(loop, 2000, "the loop to end"), 0);
});

Deno.test("on(): several handlers per filter, wildcard dispatch, removal, errors isolated", async () => {
  await using broker = await FakeBroker.start();
  const calls: string[] = [];
  const { client, conn } = await fakeConnected(broker, {
    onMessage: (t) => calls.push(`onMessage ${t}`),
  });
  const offA = client.on("home/+/light", (m) => {
    calls.push(`a ${m.topic}`);
  });
  client.on("home/+/light", () => {
    throw new Error("handler b broke");
  });
  client.on("home/#", async (m) => {
    await Promise.resolve();
    calls.push(`c ${m.topic}`);
  });
  await deliver(conn, "home/kitchen/light", "on");
  await conn.expect("puback");
  assert.deepEqual(calls.sort(), [
    "a home/kitchen/light",
    "c home/kitchen/light",
    "onMessage home/kitchen/light",
  ]);
  assert.ok(client.log.some((l) => l.includes("handler b broke")));
  offA();
  calls.length = 0;
  await deliver(conn, "home/hall/light", "off");
  await conn.expect("puback");
  assert.deepEqual(calls.sort(), ["c home/hall/light", "onMessage home/hall/light"]);
  assert.throws(() => client.on("bad/#/filter", () => {}), TypeError);
  await client.disconnect();
});

Deno.test("connect({ signal }): aborting while waiting for CONNACK rejects with the signal's reason", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { responseTime: 30 });
  const controller = new AbortController();
  const attempt = client.connect({ signal: controller.signal }).catch((e) => e);
  const conn = await broker.accept();
  await conn.expect("connect");
  const reason = new Error("user gave up");
  controller.abort(reason);
  assert.equal(await within(attempt, 2000, "connect to reject"), reason);
  await within(conn.closed, 2000, "the half-made connection to close");
  assert.equal(client.isConnected(), false);
  await client.disconnect();
});

Deno.test("subscribe({ signal }) and unsubscribe({ signal }) reject with the reason; an aborted queued one is never sent", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  conn.close();
  broker.refuseConnections(true);
  await until(() => !client.isConnected(), 2000, "the drop");
  const controller = new AbortController();
  const subscribing = client.subscribe("never", 1, { signal: controller.signal }).catch((e) => e);
  const unsubscribing = client.unsubscribe("never", { signal: controller.signal }).catch((e) => e);
  controller.abort(new Error("stop"));
  assert.equal((await subscribing).message, "stop");
  assert.equal((await unsubscribing).message, "stop");
  broker.refuseConnections(false);
  const conn2 = await broker.accept();
  await conn2.handshake();
  await client.publish("marker", "");
  const next = await conn2.next();
  assert.equal(next.cmd, "publish", "the aborted requests were never sent");
  await client.disconnect();
});

Deno.test("publish({ signal }) already on the wire: the call rejects, the message stays in flight", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker, { responseTime: 30 });
  const controller = new AbortController();
  const publishing = client.publish("t", "x", { qos: 1, signal: controller.signal }).catch((e) =>
    e
  );
  const publish = await conn.expect("publish");
  controller.abort(new Error("caller timeout"));
  assert.equal((await publishing).message, "caller timeout");
  assert.equal(client.inflightCount, 1, "not taken back");
  await conn.send({ cmd: "puback", messageId: publish.messageId! });
  await until(() => client.inflightCount === 0, 2000, "the PUBACK");
  await client.disconnect();
});

Deno.test("await using ends with disconnect(): DISCONNECT is sent", async () => {
  await using broker = await FakeBroker.start();
  let conn: FakeConnection;
  let client: MQTTClient;
  {
    await using c = quickClient(broker);
    client = c;
    const connecting = c.connect();
    conn = await broker.accept();
    await conn.handshake();
    await connecting;
  }
  await conn.expect("disconnect");
  assert.equal(client.isConnected(), false);
});
