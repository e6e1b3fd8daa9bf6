/** The connected path of MQTTClient, on the wire against the scripted fake broker. */

import assert from "node:assert/strict";
import { FakeBroker } from "./fake_broker.ts";
import {
  captureLogger,
  deadPort,
  deferred,
  fakeConnected,
  quickClient,
  text,
  until,
  within,
} from "./helpers.ts";
import {
  ClientClosedError,
  ConnectionLostError,
  ConnectionRefusedError,
  MQTTClient,
  SubscriptionRefusedError,
} from "../mod.ts";
import type { Message } from "../mod.ts";
import { dial } from "../transport/tcp.ts";

Deno.test("connect sends clientId, keepalive, credentials and will, and resolves on CONNACK 0", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, {
    clientId: "sensor-7",
    keepalive: 30,
    user: "u",
    password: "secret-pw",
    will: { topic: "status/sensor-7", payload: "offline", retain: true, qos: 1 },
  });
  const connected = client.connect();
  const conn = await broker.accept();
  const connect = await conn.handshake();
  await within(connected, 2000, "connect()");
  assert.equal(connect.clientId, "sensor-7");
  assert.equal(connect.keepalive, 30);
  assert.equal(connect.clean, false);
  assert.equal(connect.username, "u");
  assert.equal(text(connect.password!), "secret-pw");
  assert.equal(connect.will?.topic, "status/sensor-7");
  assert.equal(text(connect.will!.payload as Uint8Array), "offline");
  assert.equal(connect.will?.retain, true);
  assert.equal(connect.will?.qos, 1);
  assert.ok(client.isConnected());
  conn.autoPingresp();
  const disconnecting = client.disconnect();
  await conn.expect("disconnect");
  await disconnecting;
  assert.equal(client.isConnected(), false);
  await within(conn.closed, 2000, "the client to close the socket");
  assert.ok(!client.log.some((line) => line.includes("secret-pw")), "password never logged");
});

Deno.test("disconnect() writes every QoS 0 publish it answered, then DISCONNECT, before it closes", async () => {
  await using broker = await FakeBroker.start();
  // A socket that takes 20 ms per write: answered QoS 0 publishes wait in the write queue.
  const client = quickClient(broker, {
    dial: async (options) => {
      const conn = await dial(options);
      return {
        read: (buffer) => conn.read(buffer),
        write: async (bytes) => {
          await new Promise((resolve) => setTimeout(resolve, 20));
          return await conn.write(bytes);
        },
        close: () => conn.close(),
      };
    },
  });
  const connected = client.connect();
  const conn = await broker.accept();
  await conn.handshake();
  await within(connected, 2000, "connect()");
  conn.autoPingresp();
  const payload = new Uint8Array(1000);
  for (let i = 0; i < 500; i++) await client.publish("burst", payload, { qos: 0 });
  await within(client.disconnect(), 3000, "disconnect()");
  await within(conn.closed, 2000, "the client to close the socket");
  const fromClient = conn.frames.filter((f) => f.direction === "toBroker");
  assert.equal(fromClient.filter((f) => f.packet?.cmd === "publish").length, 500);
  assert.equal(fromClient.at(-1)?.packet?.cmd, "disconnect", "DISCONNECT last");
});

Deno.test("clean: true connects with CleanSession=1, disconnects, then keeps a CleanSession=0 session", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { clean: true });
  const connected = client.connect();
  const first = await broker.accept();
  assert.equal((await first.handshake()).clean, true);
  await first.expect("disconnect");
  const second = await broker.accept();
  assert.equal((await second.handshake()).clean, false);
  await within(connected, 2000, "connect()");
  await client.disconnect();
});

for (
  const [code, reason] of [
    [1, "unacceptable protocol version"],
    [2, "identifier rejected"],
    [3, "server unavailable"],
    [4, "bad user name or password"],
    [5, "not authorized"],
  ] as const
) {
  Deno.test(`connect rejects with the reason when the broker refuses with CONNACK ${code}`, async () => {
    await using broker = await FakeBroker.start();
    const client = quickClient(broker);
    const connected = client.connect();
    const conn = await broker.accept();
    await conn.handshake({ returnCode: code });
    const error = await within(connected.catch((e) => e), 2000, "connect() to reject");
    assert.ok(error instanceof ConnectionRefusedError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, new RegExp(reason));
    await within(conn.closed, 2000, "client to close the refused connection");
    await client.disconnect();
  });
}

Deno.test("connect rejects with ConnectionLostError when the broker closes mid-handshake", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker);
  const connected = client.connect();
  const conn = await broker.accept();
  await conn.expect("connect");
  conn.close();
  const error = await within(connected.catch((e) => e), 2000, "connect() to reject");
  assert.ok(error instanceof ConnectionLostError, String(error));
  await client.disconnect();
});

Deno.test("connect rejects naming host and port when nothing listens", async () => {
  const port = deadPort();
  const client = quickClient({ hostname: "127.0.0.1", port });
  const error = await within(client.connect().catch((e) => e), 2000, "connect() to reject");
  assert.ok(error instanceof ConnectionLostError, String(error));
  assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
  await client.disconnect();
});

Deno.test("publish QoS 0 writes one PUBLISH and resolves without an ACK", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  await within(client.publish("a/b", "hello", { retain: true }), 2000, "QoS 0 publish");
  const publish = await conn.expect("publish");
  assert.deepEqual(
    [publish.topic, text(publish.payload as Uint8Array), publish.qos, publish.retain],
    ["a/b", "hello", 0, true],
  );
  await client.disconnect();
});

Deno.test("publish QoS 1 sync resolves only after the PUBACK", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  let resolved = false;
  const publishing = client.publish("a/b", "x", { qos: 1 }).then(() => resolved = true);
  const publish = await conn.expect("publish");
  assert.equal(publish.qos, 1);
  assert.equal(publish.dup, false);
  assert.ok(publish.messageId! >= 1);
  // The PUBLISH is on the wire and its ACK withheld: a round trip through the broker
  // (a SUBSCRIBE answered) proves the client had time to resolve and did not.
  const subscribing = client.subscribe("probe", 0);
  const subscribe = await conn.expect("subscribe");
  await conn.send({ cmd: "suback", messageId: subscribe.messageId!, granted: [0] });
  await subscribing;
  assert.equal(resolved, false, "resolved before the PUBACK");
  await conn.send({ cmd: "puback", messageId: publish.messageId! });
  await within(publishing, 2000, "publish to resolve on PUBACK");
  await client.disconnect();
});

Deno.test("subscribe resolves with the granted QoS and unsubscribe on UNSUBACK", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const subscribing = client.subscribe("a/+/b", 1);
  const subscribe = await conn.expect("subscribe");
  assert.deepEqual(subscribe.subscriptions, [{ topic: "a/+/b", qos: 1 }]);
  await conn.send({ cmd: "suback", messageId: subscribe.messageId!, granted: [0] });
  assert.equal(
    await within(subscribing, 2000, "subscribe"),
    0,
    "granted QoS is what the broker says",
  );
  const unsubscribing = client.unsubscribe("a/+/b");
  const unsubscribe = await conn.expect("unsubscribe");
  assert.deepEqual(unsubscribe.unsubscriptions, ["a/+/b"]);
  await conn.send({ cmd: "unsuback", messageId: unsubscribe.messageId! });
  await within(unsubscribing, 2000, "unsubscribe");
  await client.disconnect();
});

Deno.test("subscribe rejects with SubscriptionRefusedError on SUBACK 0x80", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const subscribing = client.subscribe("forbidden/#", 1).catch((e) => e);
  const subscribe = await conn.expect("subscribe");
  await conn.send({ cmd: "suback", messageId: subscribe.messageId!, granted: [0x80] });
  const error = await within(subscribing, 2000, "subscribe to reject");
  assert.ok(error instanceof SubscriptionRefusedError, String(error));
  assert.match(error.message, /forbidden\/#/);
  assert.ok(client.isConnected(), "a refused subscription does not drop the connection");
  await client.disconnect();
});

Deno.test("incoming QoS 1: onMessage gets topic, payload, flags; PUBACK waits for its Promise", async () => {
  await using broker = await FakeBroker.start();
  const release = deferred();
  const called = deferred<unknown[]>();
  const { client, conn } = await fakeConnected(broker, {
    onMessage: async (...args: unknown[]) => {
      called.resolve(args);
      await release.promise;
    },
  });
  await conn.send({
    cmd: "publish",
    topic: "cmd/reboot",
    payload: new TextEncoder().encode("now") as never,
    qos: 1,
    messageId: 42,
    retain: true,
    dup: true,
  });
  const [topic, payload, retained, qos, dup] = await within(called.promise, 2000, "onMessage");
  assert.equal(topic, "cmd/reboot");
  assert.ok(payload instanceof Uint8Array);
  assert.equal(text(payload), "now");
  assert.deepEqual([retained, qos, dup], [true, 1, true]);
  // Round trip while the handler is pending: the PINGREQ/PINGRESP-free way is a QoS 0 publish.
  await client.publish("probe", "");
  await conn.expect("publish");
  assert.equal(
    broker.framesOf("puback", "toBroker").length,
    0,
    "PUBACK before the handler settled",
  );
  release.resolve();
  const puback = await conn.expect("puback");
  assert.equal(puback.messageId, 42);
  await client.disconnect();
});

Deno.test("a throwing handler is logged, the message acknowledged, the connection kept", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker, {
    onMessage: () => {
      throw new Error("handler bug");
    },
  });
  await conn.send({
    cmd: "publish",
    topic: "t",
    payload: new Uint8Array([1]) as never,
    qos: 1,
    messageId: 7,
    retain: false,
    dup: false,
  });
  assert.equal((await conn.expect("puback")).messageId, 7);
  assert.ok(client.log.some((l) => l.startsWith("error:") && l.includes("handler bug")));
  assert.ok(client.isConnected());
  await client.disconnect();
});

Deno.test("payloads of 0 B, 1 MiB and every byte value arrive exact (plain-broker mode)", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const received: Message[] = [];
  const client = quickClient(broker);
  client.on("bin/#", (m) => {
    received.push(m);
  });
  await client.connect();
  await client.subscribe("bin/#", 1);
  const big = new Uint8Array(1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
  const every = Uint8Array.from({ length: 256 }, (_, i) => i);
  const payloads = [new Uint8Array(0), big, every];
  for (const [i, payload] of payloads.entries()) {
    await client.publish(`bin/${i}`, payload, { qos: 1 });
  }
  await broker.waitFor(() => received.length === 3, { what: "3 messages back" });
  for (const [i, payload] of payloads.entries()) {
    assert.equal(received[i].topic, `bin/${i}`);
    assert.deepEqual(received[i].payload, payload);
  }
  await client.disconnect();
});

Deno.test("packet ids wrap from 65535 to 1 on the wire without reusing an id in flight", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker, { maxInflight: 4, responseTime: 600 });
  // Hold packet 1 un-ACKed for the whole run; acknowledge every other publish.
  let held: number | undefined;
  const ids: number[] = [];
  const total = 65_540;
  const reader = (async () => {
    while (ids.length < total) {
      const publish = await conn.expect("publish");
      ids.push(publish.messageId!);
      if (held === undefined) held = publish.messageId;
      else await conn.send({ cmd: "puback", messageId: publish.messageId! });
    }
  })();
  for (let i = 0; i < total; i++) {
    await client.publish("t", "", { qos: 1, sync: false });
  }
  await within(reader, 60_000, "all publishes");
  assert.equal(held, 1);
  assert.equal(ids[65_534], 65_535);
  assert.equal(ids[65_535], 2, "after 65535 comes 2: 1 is still in flight");
  assert.ok(!ids.slice(1).includes(1), "the held id is never reused");
  await conn.send({ cmd: "puback", messageId: 1 });
  await client.disconnect();
});

Deno.test("calls after disconnect reject with ClientClosedError", async () => {
  await using broker = await FakeBroker.start();
  const { client } = await fakeConnected(broker);
  await client.disconnect();
  await assert.rejects(client.publish("t", "x"), ClientClosedError);
  await assert.rejects(client.subscribe("t"), ClientClosedError);
  await client.disconnect(); // idempotent
});

Deno.test("the default client id is random per client, at most 23 characters of [0-9a-zA-Z]", () => {
  const a = new MQTTClient({ server: "127.0.0.1", logger: captureLogger() }).clientId;
  const b = new MQTTClient({ server: "127.0.0.1", logger: captureLogger() }).clientId;
  assert.match(a, /^[0-9a-zA-Z]{1,23}$/);
  assert.match(b, /^[0-9a-zA-Z]{1,23}$/);
  assert.notEqual(a, b, "two programs on one host must not take each other's session");
});

Deno.test("QoS 0 publishes that outrun the socket wait for it to drain and all go out", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await fakeConnected(broker);
  const payload = new Uint8Array(4096);
  const count = 1000; // 4 MiB queued at once: far above the 256 KiB high-water mark
  const calls = Array.from({ length: count }, () => client.publish("q0", payload));
  await within(Promise.all(calls), 10_000, "every QoS 0 publish to be written");
  await broker.waitFor(() => broker.framesOf("publish", "toBroker").length === count, {
    what: `${count} PUBLISH frames`,
  });
  assert.equal(conn.isClosed, false);
  await client.disconnect();
});

Deno.test("a logger that throws cannot take the client down: it still reconnects after a cut", async () => {
  await using broker = await FakeBroker.start();
  const throwing = () => {
    throw new Error("logger exploded");
  };
  const client = quickClient(broker, {
    logger: { debug: throwing, info: throwing, warn: throwing, error: throwing },
  });
  const connecting = client.connect();
  const first = await broker.accept();
  await first.handshake();
  await within(connecting, 2000, "connect()");
  first.close(); // the client logs "connection lost" through the throwing logger
  const second = await broker.accept({ timeoutMs: 3000 });
  await second.handshake();
  await until(() => client.isConnected(), 2000, "reconnected");
  await client.disconnect();
});
