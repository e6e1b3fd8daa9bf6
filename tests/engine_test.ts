/**
 * The reliability engine on the wire: keepalive, dead-link detection,
 * reconnect with back-off, NetInterface, streaming window and retransmission,
 * each fault driven by the scripted fake broker.
 */

import assert from "node:assert/strict";
import { FakeBroker, type FakeConnection } from "./fake_broker.ts";
import { deadPort, deferred, quickClient, text, until, within } from "./helpers.ts";
import {
  ClientClosedError,
  ConnectionRefusedError,
  type MQTTClient,
  RecordingNetInterface,
  ResponseTimeoutError,
} from "../mod.ts";
import type { MQTTClientOptions } from "../options.ts";

type Client = MQTTClient & { log: string[] };

async function connected(
  broker: FakeBroker,
  options: Partial<MQTTClientOptions> = {},
): Promise<{ client: Client; conn: FakeConnection }> {
  const client = quickClient(broker, options);
  const connecting = client.connect();
  const conn = await broker.accept();
  await conn.handshake();
  await within(connecting, 2000, "connect()");
  return { client, conn };
}

Deno.test("keepalive: a PINGREQ goes out after keepalive seconds without traffic", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { keepalive: 1 });
  const start = performance.now();
  await conn.expect("pingreq", { timeoutMs: 3000 });
  const first = performance.now() - start;
  await conn.send({ cmd: "pingresp" });
  await conn.expect("pingreq", { timeoutMs: 3000 });
  const second = performance.now() - start;
  assert.ok(first >= 900, `first ping after ${first} ms, before keepalive`);
  assert.ok(second - first >= 900, `second ping ${second - first} ms after the first`);
  await client.disconnect();
});

Deno.test("keepalive 0 sends no PINGREQ", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { keepalive: 0 });
  // Negative check, bounded: idle for 1.5 s, then a publish must be the next frame.
  await new Promise((r) => setTimeout(r, 1500));
  await client.publish("t", "after idle");
  const next = await conn.next();
  assert.equal(next.cmd, "publish");
  await client.disconnect();
});

Deno.test("half-open link (silence after PINGREQ) is detected within keepalive + responseTime and healed", async () => {
  await using broker = await FakeBroker.start();
  const changes: boolean[] = [];
  const { client, conn } = await connected(broker, {
    keepalive: 1,
    responseTime: 0.5,
    onConnectionChange: (up) => changes.push(up),
  });
  const silentSince = performance.now();
  conn.silence();
  const second = await broker.accept({ timeoutMs: 5000 });
  const detectedAfter = performance.now() - silentSince;
  await second.handshake();
  await until(() => client.isConnected(), 2000, "reconnection");
  assert.ok(detectedAfter <= 1500 + 500, `detected after ${detectedAfter} ms`);
  assert.ok(client.log.some((l) => l.includes("no PINGRESP within 500 ms")), client.log.join("\n"));
  assert.deepEqual(changes, [true, false, true]);
  console.log(`half-open detected and reconnected in ${detectedAfter.toFixed(0)} ms`);
  await client.disconnect();
});

Deno.test("a CONNACK that never comes fails connect() within responseTime", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { responseTime: 0.3 });
  const start = performance.now();
  const result = client.connect().catch((e) => e);
  const conn = await broker.accept();
  await conn.expect("connect");
  conn.silence();
  const error = await within(result, 3000, "connect() to fail");
  assert.ok(error instanceof ResponseTimeoutError, String(error));
  assert.match(error.message, /no CONNACK within 300 ms/);
  assert.ok(performance.now() - start < 2000);
  await client.disconnect();
});

Deno.test("PUBACKs withheld then connection dropped: re-sent on the new link with same ids, DUP, in order, before new messages", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 8 });
  conn.autoPingresp();
  for (let i = 0; i < 5; i++) await client.publish("s", `m${i}`, { qos: 1, sync: false });
  const last = client.publish("s", "m5", { qos: 1, sync: true });
  const firstIds: number[] = [];
  for (let i = 0; i < 6; i++) firstIds.push((await conn.expect("publish")).messageId!);
  conn.close();
  const conn2 = await broker.accept();
  const connect = await conn2.handshake({ sessionPresent: true });
  assert.equal(connect.clean, false);
  const fresh = client.publish("s", "new", { qos: 1, sync: false });
  const resent = [];
  for (let i = 0; i < 7; i++) resent.push(await conn2.expect("publish"));
  assert.deepEqual(resent.slice(0, 6).map((p) => p.messageId), firstIds, "same ids, same order");
  assert.deepEqual(resent.slice(0, 6).map((p) => text(p.payload as Uint8Array)), [
    "m0",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
  ]);
  assert.ok(resent.slice(0, 6).every((p) => p.dup), "re-sends carry DUP");
  assert.equal(text(resent[6].payload as Uint8Array), "new");
  assert.equal(resent[6].dup, false);
  for (const p of resent) await conn2.send({ cmd: "puback", messageId: p.messageId! });
  await within(Promise.all([last, fresh]), 2000, "publishes to resolve after re-send");
  // Nothing was ever re-sent on the first, live connection.
  const onFirst = broker.frames.filter((f) =>
    f.connection === conn.id && f.packet?.cmd === "publish"
  );
  assert.equal(onFirst.length, 6);
  await client.disconnect();
});

Deno.test("un-ACKed publishes are re-sent even when the broker lost the session", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker);
  const publishing = client.publish("cmd", "must arrive", { qos: 1 });
  const original = await conn.expect("publish");
  conn.close();
  const conn2 = await broker.accept();
  await conn2.handshake({ sessionPresent: false });
  const again = await conn2.expect("publish");
  assert.equal(again.messageId, original.messageId);
  assert.equal(text(again.payload as Uint8Array), "must arrive");
  await conn2.send({ cmd: "puback", messageId: again.messageId! });
  await within(publishing, 2000, "publish");
  await client.disconnect();
});

Deno.test("a withheld PUBACK marks the link dead after responseTime; the message is re-sent on a fresh link only", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { responseTime: 0.4 });
  conn.autoPingresp();
  const publishing = client.publish("t", "x", { qos: 1 });
  const first = await conn.expect("publish");
  await within(conn.closed, 3000, "the client to give up on the link");
  const conn2 = await broker.accept();
  await conn2.handshake({ sessionPresent: true });
  const again = await conn2.expect("publish");
  assert.equal(again.messageId, first.messageId);
  assert.equal(again.dup, true);
  await conn2.send({ cmd: "puback", messageId: again.messageId! });
  await within(publishing, 2000, "publish");
  assert.ok(client.log.some((l) => l.includes(`no PUBACK for packet ${first.messageId}`)));
  await client.disconnect();
});

Deno.test("drop after the Nth PUBLISH: a 50-message stream still arrives complete and in order", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 10 });
  conn.autoPuback();
  conn.autoPingresp();
  conn.dropAfterPublishes(20);
  const received: string[] = [];
  const collect = async (c: FakeConnection) => {
    try {
      for (;;) received.push(text((await c.expect("publish")).payload as Uint8Array));
    } catch { /* connection ended */ }
  };
  const first = collect(conn);
  const sending = (async () => {
    for (let i = 0; i < 49; i++) await client.publish("s", `${i}`, { qos: 1, sync: false });
    await client.publish("s", "49", { qos: 1, sync: true });
  })();
  const conn2 = await broker.accept();
  await first;
  await conn2.handshake({ sessionPresent: true });
  conn2.autoPuback();
  conn2.autoPingresp();
  const second = collect(conn2);
  await within(sending, 5000, "the stream to complete");
  const unique = [...new Set(received)];
  assert.deepEqual(unique.map(Number), Array.from({ length: 50 }, (_, i) => i));
  console.log(`drop after 20th PUBLISH: ${received.length - 50} duplicates`);
  await client.disconnect();
  await second;
});

Deno.test("a broker that holds PUBACKs until the client sends (Nagle, no delayed ACK) does not stall a stream", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 64 });
  conn.autoPuback();
  conn.autoPingresp();
  conn.nagle(); // without a write from the client, held PUBACKs never come
  const count = 2000;
  const sending = (async () => {
    for (let i = 0; i < count - 1; i++) {
      await client.publish("n", `${i}`, { qos: 1, sync: false });
    }
    // Its PUBACK is held too, behind the previous ones: silence must free it.
    await client.publish("n", `${count - 1}`, { qos: 1, sync: true });
  })();
  await within(sending, 10_000, "the stream, last PUBACK included");
  const payloads = conn.frames
    .filter((f) => f.direction === "toBroker" && f.packet?.cmd === "publish")
    .map((f) => text((f.packet as { payload: Uint8Array }).payload));
  assert.deepEqual(payloads.map(Number), Array.from({ length: count }, (_, i) => i));
  assert.equal(client.inflightCount, 0);
  await within(client.disconnect(), 5000, "disconnect");
});

Deno.test("disconnect() against a Nagle broker: the held last PUBACKs are freed, then DISCONNECT ends the wire", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 64, responseTime: 5 });
  conn.autoPuback();
  conn.autoPingresp();
  conn.nagle();
  const calls = Array.from({ length: 50 }, (_, i) => client.publish("d", `${i}`, { qos: 1 }));
  await until(() => conn.frames.some((f) => f.packet?.cmd === "puback"), 2000, "a first PUBACK");
  const started = performance.now();
  await within(client.disconnect(), 4000, "disconnect()");
  const took = performance.now() - started;
  await within(Promise.all(calls), 1000, "every publish to settle"); // none rejected
  await within(conn.closed, 2000, "the broker to read the rest");
  const sent = conn.frames.filter((f) => f.direction === "toBroker").map((f) => f.packet?.cmd);
  assert.equal(sent.at(-1), "disconnect", `the last frame: ${sent.slice(-3).join(", ")}`);
  assert.ok(took < 4000, `disconnect() took ${took.toFixed(0)} ms: the tail was not nudged`);
});

Deno.test("against a broker that does not hold packets, a stream sends few PINGREQs", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 16 });
  conn.autoPuback();
  conn.autoPingresp();
  const count = 3000;
  for (let i = 0; i < count - 1; i++) await client.publish("p", `${i}`, { qos: 1, sync: false });
  await within(client.publish("p", "last", { qos: 1 }), 10_000, "the stream");
  const pings = conn.frames.filter((f) =>
    f.direction === "toBroker" && f.packet?.cmd === "pingreq"
  );
  // A nudge is for a broker that went silent after a packet; one that answers
  // every PUBLISH at once gives few such silences.
  assert.ok(pings.length <= count / 100, `${pings.length} PINGREQs for ${count} publishes`);
  console.log(`${pings.length} PINGREQs for ${count} publishes`);
  await client.disconnect();
});

Deno.test("the window holds maxInflight un-ACKed publishes; the next call waits and goes out on a PUBACK", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 3, responseTime: 30 });
  conn.autoPingresp();
  let resolvedCount = 0;
  const calls = Array.from(
    { length: 5 },
    (_, i) => client.publish("w", `${i}`, { qos: 1, sync: false }).then(() => resolvedCount++),
  );
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await conn.expect("publish")).messageId!);
  // Round trip to prove the 4th is held back, not merely slow.
  const probe = client.subscribe("probe");
  const next = await conn.next();
  assert.equal(next.cmd, "subscribe", "the 4th publish went out with a full window");
  await conn.send({ cmd: "suback", messageId: next.messageId!, granted: [0] });
  await probe;
  assert.equal(client.inflightCount, 3);
  assert.equal(
    resolvedCount,
    2,
    "calls resolve while the window has room; the one that filled it waits",
  );
  await conn.send({ cmd: "puback", messageId: ids[0] });
  const fourth = await conn.expect("publish");
  assert.equal(text(fourth.payload as Uint8Array), "3");
  await conn.send({ cmd: "puback", messageId: ids[1] });
  const fifth = await conn.expect("publish");
  assert.equal(text(fifth.payload as Uint8Array), "4");
  for (const id of [ids[2], fourth.messageId!, fifth.messageId!]) {
    await conn.send({ cmd: "puback", messageId: id });
  }
  await within(Promise.all(calls), 2000, "every call to resolve");
  assert.equal(client.inflightCount, 0);
  await client.disconnect();
});

Deno.test("publish and subscribe made while disconnected wait and go out after reconnect", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker);
  broker.refuseConnections(true);
  conn.close();
  await until(() => !client.isConnected(), 2000, "the client to notice the drop");
  const publishing = client.publish("late", "1", { qos: 1 });
  const subscribing = client.subscribe("late/#", 1);
  await broker.waitFor(() => broker.refusedCount >= 2, { what: "refused attempts" });
  broker.refuseConnections(false);
  const conn2 = await broker.accept();
  await conn2.handshake();
  // Requests go first on a fresh link (subscriptions in place before publishing).
  const subscribe = await conn2.expect("subscribe");
  const publish = await conn2.expect("publish");
  await conn2.send({ cmd: "puback", messageId: publish.messageId! });
  await conn2.send({ cmd: "suback", messageId: subscribe.messageId!, granted: [1] });
  await within(Promise.all([publishing, subscribing]), 2000, "calls to complete");
  await client.disconnect();
});

Deno.test("a SUBACK that never arrives: link declared dead, SUBSCRIBE re-sent with its id on the next link", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { responseTime: 0.4 });
  const subscribing = client.subscribe("never/acked", 1);
  const subscribe = await conn.expect("subscribe");
  await within(conn.closed, 3000, "the client to give up on the link");
  const conn2 = await broker.accept();
  await conn2.handshake({ sessionPresent: true });
  const again = await conn2.expect("subscribe");
  assert.equal(again.messageId, subscribe.messageId);
  assert.deepEqual(again.subscriptions, subscribe.subscriptions);
  await conn2.send({ cmd: "suback", messageId: again.messageId!, granted: [1] });
  assert.equal(await within(subscribing, 2000, "subscribe"), 1);
  assert.ok(client.log.some((l) => l.includes("no SUBACK")));
  await client.disconnect();
});

Deno.test("every automatic reconnect uses CleanSession=0 even with clean: true; onConnect hears sessionPresent", async () => {
  await using broker = await FakeBroker.start();
  const sessions: boolean[] = [];
  const client = quickClient(broker, {
    clean: true,
    onConnect: (_client, sessionPresent) => {
      sessions.push(sessionPresent);
    },
  });
  const connecting = client.connect();
  const a = await broker.accept();
  assert.equal((await a.handshake()).clean, true);
  await a.expect("disconnect");
  const b = await broker.accept();
  assert.equal((await b.handshake({ sessionPresent: false })).clean, false);
  await connecting;
  b.close();
  const c = await broker.accept();
  assert.equal((await c.handshake({ sessionPresent: true })).clean, false);
  await until(() => sessions.length === 2, 2000, "onConnect after reconnect");
  assert.deepEqual(sessions, [false, true]);
  await client.disconnect();
});

Deno.test("start() never throws and keeps trying until the broker accepts", async () => {
  await using broker = await FakeBroker.start();
  broker.refuseConnections(true);
  const client = quickClient(broker);
  const up = deferred();
  const c2 = quickClient(broker, { onConnectionChange: (isUp) => isUp && up.resolve() });
  c2.start();
  await broker.waitFor(() => broker.refusedCount >= 3, { what: "3 refused attempts" });
  broker.refuseConnections(false);
  const conn = await broker.accept();
  await conn.handshake();
  await within(up.promise, 2000, "onConnectionChange(true)");
  await c2.disconnect();
  await client.disconnect();
});

Deno.test("a broker that refuses CONNECT is retried at the back-off cap, not hammered", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { reconnect: { initialDelay: 0.01, maxDelay: 0.3 } });
  client.start();
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const conn = await broker.accept();
    await conn.handshake({ returnCode: 5 });
    times.push(performance.now());
  }
  const gaps = [times[1] - times[0], times[2] - times[1]];
  assert.ok(
    gaps.every((g) => g >= 290),
    `attempts ${gaps.join(", ")} ms apart, below the 300 ms cap`,
  );
  assert.ok(client.log.some((l) => l.includes("not authorized")));
  await client.disconnect();
});

Deno.test("after bounceAfter failed TCP attempts the network is bounced; 'up again' cuts the wait short", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, {
    net: undefined,
  });
  await client.disconnect();
  conn.close();
  const net = new RecordingNetInterface();
  const flaky = quickClient({ hostname: "127.0.0.1", port: deadPort() }, {
    net,
    reconnect: { initialDelay: 0.01, maxDelay: 0.05, bounceAfter: 3 },
  });
  flaky.start();
  await until(() => net.calls.some((c) => c.bounce === true), 5000, "a bounce");
  const beforeBounce = net.calls.filter((c) => c.method === "ensureUp" && !c.bounce).length;
  assert.ok(beforeBounce >= 3, `bounced after ${beforeBounce} plain attempts`);
  await flaky.disconnect();
  assert.equal(net.listenerCount, 0, "disconnect unregisters from the network");

  // A long back-off is cut short when the network reports "up again".
  const net2 = new RecordingNetInterface();
  await using broker2 = await FakeBroker.start();
  const patient = quickClient(broker2, {
    net: net2,
    reconnect: { initialDelay: 30, maxDelay: 60 },
  });
  net2.setUp(false);
  patient.start();
  await until(() => net2.calls.length >= 1, 2000, "the first attempt");
  const start = performance.now();
  net2.setUp(true);
  const conn2 = await broker2.accept({ timeoutMs: 3000 });
  await conn2.handshake();
  assert.ok(performance.now() - start < 2000, "reconnected long before the 15-30 s back-off");
  await patient.disconnect();
});

Deno.test("disconnect waits for outstanding PUBACKs, sends DISCONNECT, rejects what is still pending", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 1, responseTime: 2 });
  conn.autoPingresp();
  const first = client.publish("d", "1", { qos: 1 });
  const queued = client.publish("d", "2", { qos: 1 }).catch((e) => e);
  const publish = await conn.expect("publish");
  const disconnecting = client.disconnect();
  await conn.send({ cmd: "puback", messageId: publish.messageId! });
  await within(first, 2000, "the in-flight publish to complete during disconnect");
  // The queued one never went out: DISCONNECT follows the ACKed publish directly.
  await conn.expect("disconnect");
  await disconnecting;
  const error = await queued;
  assert.ok(error instanceof ClientClosedError, String(error));
  assert.equal(client.isConnected(), false);
});

Deno.test("disconnect gives up on a missing PUBACK after responseTime and rejects the publish", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { responseTime: 0.3 });
  conn.autoPingresp();
  const publishing = client.publish("d", "never acked", { qos: 1 }).catch((e) => e);
  await conn.expect("publish");
  const start = performance.now();
  await client.disconnect();
  assert.ok(performance.now() - start < 2000);
  assert.ok((await publishing) instanceof ClientClosedError);
});

Deno.test("an abort signal withdraws a publish still waiting for the window; it is never sent", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await connected(broker, { maxInflight: 1, responseTime: 30 });
  conn.autoPingresp();
  const first = client.publish("a", "1", { qos: 1 });
  const controller = new AbortController();
  const second = client.publish("a", "2", { qos: 1, signal: controller.signal }).catch((e) => e);
  const publish = await conn.expect("publish");
  controller.abort(new Error("gave up"));
  assert.equal((await second).message, "gave up");
  await conn.send({ cmd: "puback", messageId: publish.messageId! });
  await first;
  // With maxInflight 1 a streaming publish resolves once its PUBACK frees the window.
  const third = client.publish("a", "3", { qos: 1, sync: false });
  const next = await conn.expect("publish");
  assert.equal(text(next.payload as Uint8Array), "3", "the aborted publish was never sent");
  await conn.send({ cmd: "puback", messageId: next.messageId! });
  await within(third, 2000, "the third publish");
  await client.disconnect();
});

Deno.test("a refused first connect() rejects and leaves the client reusable", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker);
  const attempt = client.connect().catch((e) => e);
  const a = await broker.accept();
  await a.handshake({ returnCode: 4 });
  assert.ok((await attempt) instanceof ConnectionRefusedError);
  const again = client.connect();
  const b = await broker.accept();
  await b.handshake();
  await within(again, 2000, "second connect()");
  await client.disconnect();
});

Deno.test("a PUBLISH in the same read as the CONNACK is delivered and acknowledged", async () => {
  await using broker = await FakeBroker.start();
  const received: string[] = [];
  const client = quickClient(broker, { onMessage: (topic) => received.push(topic) });
  const connecting = client.connect();
  const conn = await broker.accept();
  await conn.expect("connect");
  const connack = [0x20, 0x02, 0x01, 0x00]; // session present, accepted
  const publish = [0x32, 0x08, 0x00, 0x04, ...new TextEncoder().encode("cmd1"), 0x00, 0x09];
  await conn.sendRaw(new Uint8Array([...connack, ...publish]));
  await within(connecting, 2000, "connect()");
  const puback = await conn.expect("puback");
  assert.equal(puback.messageId, 9);
  assert.deepEqual(received, ["cmd1"]);
  await client.disconnect();
});

Deno.test("after the network says 'up again' the client retries TCP before bouncing anything", async () => {
  const net = new RecordingNetInterface();
  const client = quickClient({ hostname: "127.0.0.1", port: deadPort() }, {
    net,
    reconnect: { initialDelay: 10, maxDelay: 20, bounceAfter: 1 },
  });
  client.start();
  await until(() => client.log.some((l) => l.includes("retrying in")), 2000, "a failed attempt");
  const before = net.calls.length;
  net.setUp(false);
  net.setUp(true); // wakes the client out of its 5-10 s back-off
  await until(() => net.calls.slice(before).some((c) => c.method === "ensureUp"), 2000, "a retry");
  const retry = net.calls.slice(before).find((c) => c.method === "ensureUp")!;
  assert.equal(retry.bounce, false, "bounced the network that had just come back");
  await client.disconnect();
});
