/**
 * MQTT 5 behaviours against the fake broker: outgoing topic aliases (assigned,
 * capped by the broker's Topic Alias Maximum, forgotten on every new
 * connection, never on a re-send), `client.request()` with Response Topic
 * and Correlation Data, and enhanced authentication (AUTH exchanges while
 * connecting and re-authentication). The codec's alias encoding is checked
 * against mqtt-packet too.
 */

import assert from "node:assert/strict";
import { PacketDecoder } from "../codec/decode.ts";
import type { ConnackProperties, Packet, PublishPacket } from "../codec/packets.ts";
import { encodeProperties } from "../codec/properties.ts";
import { encodePublish } from "../codec/publish.ts";
import {
  ConnectionRefusedError,
  type Message,
  MQTTError,
  ProtocolError,
  ResponseTimeoutError,
  ServerDisconnectError,
} from "../mod.ts";
import { FakeBroker, type FakeConnection } from "../testing.ts";
import { deferred, Links, quickClient, type TestClient, text, until, within } from "./helpers.ts";
import { Buffer, type Packet as OraclePacket, parser } from "./oracle.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

function decodeOne(frame: Uint8Array): Packet {
  const packets: Packet[] = [];
  new PacketDecoder({ protocolVersion: 5 }).push(frame, (p) => packets.push(p));
  assert.equal(packets.length, 1);
  return packets[0];
}

function oracleParse(frame: Uint8Array): OraclePacket {
  const packets: OraclePacket[] = [];
  const p = parser({ protocolVersion: 5 });
  p.on("packet", (packet: OraclePacket) => packets.push(packet));
  p.on("error", (error: Error) => {
    throw error;
  });
  p.parse(Buffer.from(frame));
  assert.equal(packets.length, 1);
  return packets[0];
}

/** `topic|alias` of a PUBLISH as the broker received it ("" topic: alias only). */
function wire(p: PublishPacket): string {
  return `${p.topic}|${p.properties?.topicAlias ?? "-"}`;
}

// ---------------------------------------------------------------- the codec

Deno.test("codec: a topic alias is appended to the properties, with or without the topic", () => {
  const payload = bytes("x");
  const props = { contentType: "text/plain", userProperties: [["k", "v"]] as [string, string][] };
  const block = encodeProperties("publish", props);
  for (const properties of [undefined, props, block]) {
    const full = encodePublish("a/b", payload, 1, 7, false, false, 5, properties, 3);
    const only = encodePublish("", payload, 1, 8, false, false, 5, properties, 3);
    for (const [frame, topic, id] of [[full, "a/b", 7], [only, "", 8]] as const) {
      const ours = decodeOne(frame) as PublishPacket;
      assert.equal(ours.topic, topic);
      assert.equal(ours.messageId, id);
      assert.equal(ours.properties?.topicAlias, 3);
      assert.equal(ours.properties?.contentType, properties ? "text/plain" : undefined);
      const theirs = oracleParse(frame) as { topic: string; properties?: { topicAlias?: number } };
      assert.equal(theirs.topic, topic, "mqtt-packet reads the same topic");
      assert.equal(theirs.properties?.topicAlias, 3, "mqtt-packet reads the same alias");
    }
  }
  assert.throws(() => encodePublish("t", payload, 0, 0, false, false, 4, undefined, 1), /MQTT 5/);
  assert.throws(
    () => encodePublish("t", payload, 0, 0, false, false, 5, undefined, 65_536),
    /1..65535/,
  );
});

// ---------------------------------------------------------------- topic aliases

async function v5Connected(
  broker: FakeBroker,
  connack: ConnackProperties,
  options: Parameters<typeof quickClient>[1] = {},
): Promise<{ client: TestClient; conn: FakeConnection }> {
  const client = quickClient(broker, { protocolVersion: 5, ...options });
  const connecting = client.connect();
  const conn = await broker.accept();
  await conn.handshake({ properties: connack });
  await within(connecting, 3000, "connect()");
  conn.autoPingresp();
  return { client, conn };
}

Deno.test("aliases: a repeated topic gets one, up to the broker's Topic Alias Maximum", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await v5Connected(broker, { topicAliasMaximum: 2 });
  try {
    conn.autoAck();
    const topics = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "a"];
    for (const t of topics) await client.publish(t, "x", { qos: 1 });
    await client.publish("q0", "y");
    await client.publish("q0", "y");
    const seen: string[] = [];
    for (let i = 0; i < topics.length + 2; i++) seen.push(wire(await conn.expect("publish")));
    assert.deepEqual(seen, [
      "a|-", // once: no alias yet
      "a|1", // repeated: topic and a new alias
      "|1", // known: the alias alone
      "b|-",
      "b|2",
      "|2",
      "c|-", // the broker allows 2: c goes in full
      "c|-",
      "c|-",
      "|1",
      "q0|-", // QoS 0 too, but no slot is left
      "q0|-",
    ]);
  } finally {
    await client.disconnect();
  }
});

Deno.test("aliases: none without the broker's Topic Alias Maximum", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await v5Connected(broker, {});
  try {
    conn.autoAck();
    for (let i = 0; i < 4; i++) await client.publish("t", "x", { qos: 1 });
    for (let i = 0; i < 4; i++) assert.equal(wire(await conn.expect("publish")), "t|-");
  } finally {
    await client.disconnect();
  }
});

Deno.test("aliases: a publish refused for its size sets no alias", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await v5Connected(broker, {
    topicAliasMaximum: 4,
    maximumPacketSize: 100,
  });
  try {
    conn.autoAck();
    for (let i = 0; i < 2; i++) {
      await assert.rejects(client.publish("big/t", new Uint8Array(200), { qos: 1 }), RangeError);
    }
    await client.publish("big/t", "small", { qos: 1 });
    await client.publish("big/t", "small", { qos: 1 });
    const seen = [wire(await conn.expect("publish")), wire(await conn.expect("publish"))];
    assert.deepEqual(seen, ["big/t|1", "|1"], "the alias is set by a PUBLISH that went out");
  } finally {
    await client.disconnect();
  }
});

Deno.test("aliases: forgotten on a new connection; re-sends carry their topic", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await v5Connected(broker, { topicAliasMaximum: 5 });
  try {
    conn.autoAck();
    for (let i = 0; i < 3; i++) await client.publish("s/1", `${i}`, { qos: 1 });
    conn.autoAck(false);
    const pending = [client.publish("s/1", "un-acked", { qos: 1 })];
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) seen.push(wire(await conn.expect("publish")));
    assert.deepEqual(seen, ["s/1|-", "s/1|1", "|1", "|1"], "alias in use before the drop");
    conn.close();
    const second = await broker.accept();
    await second.handshake({ sessionPresent: true, properties: { topicAliasMaximum: 5 } });
    second.autoPingresp();
    const resent = await second.expect("publish");
    assert.equal(resent.dup, true);
    assert.equal(wire(resent), "s/1|-", "the re-send carries its topic, no stale alias");
    second.autoAck();
    await second.send({ cmd: "puback", messageId: resent.messageId });
    await within(Promise.all(pending), 3000, "the re-sent publish");
    for (let i = 0; i < 3; i++) await client.publish("s/1", `again ${i}`, { qos: 1 });
    const after: string[] = [];
    for (let i = 0; i < 3; i++) after.push(wire(await second.expect("publish")));
    assert.deepEqual(after, ["s/1|-", "s/1|1", "|1"], "the new connection starts over");
  } finally {
    await client.disconnect();
  }
});

Deno.test("aliases end to end: a subscriber gets the right topics across a reconnect", async () => {
  await using broker = await FakeBroker.start({ mode: "broker", broker: { topicAliasMaximum: 3 } });
  const got: string[] = [];
  const subLinks = new Links();
  const sub = quickClient(broker, {
    protocolVersion: 5,
    clientId: "alias-sub",
    onMessage: (topic, payload) => void got.push(`${topic} ${text(payload)}`),
    onConnectionChange: subLinks.handler,
  });
  const pubLinks = new Links();
  const pub = quickClient(broker, {
    protocolVersion: 5,
    clientId: "alias-pub",
    onConnectionChange: pubLinks.handler,
  });
  try {
    await within(sub.connect(), 3000, "subscriber");
    await sub.subscribe("al/#", 1);
    await within(pub.connect(), 3000, "publisher");
    const expected: string[] = [];
    const burst = async (tag: string) => {
      for (let i = 0; i < 12; i++) {
        const topic = `al/${i % 5}`;
        expected.push(`${topic} ${tag}${i}`);
        await pub.publish(topic, `${tag}${i}`, { qos: i % 3 === 0 ? 0 : 1 });
      }
    };
    await burst("a");
    broker.dropAll();
    // QoS 0 messages are not kept for an offline subscriber: both must be back first.
    await subLinks.ups(2, 3000);
    await pubLinks.ups(2, 3000);
    await burst("b");
    // The drop cut the subscriber too: a QoS 1 message may come twice (at least once).
    const once = () => got.filter((m, i) => m !== got[i - 1]);
    await until(() => once().length === expected.length, 3000, "every message").catch((e) => {
      throw new Error(`${e.message}: got ${JSON.stringify(got)}`);
    });
    assert.deepEqual(once(), expected);
    const aliased = broker.framesOf("publish", "toBroker")
      .filter((f) => (f.packet as PublishPacket | undefined)?.topic === "");
    assert.ok(aliased.length > 0, "aliases were used");
  } finally {
    await pub.disconnect();
    await sub.disconnect();
  }
});

// ---------------------------------------------------------------- request()

/** A v5 client that answers every request on `svc/#` with "re: <payload>", delayed by `delay()`. */
async function responder(
  broker: FakeBroker,
  delay: (payload: string) => Promise<void> = () => Promise.resolve(),
): Promise<TestClient> {
  const client = quickClient(broker, { protocolVersion: 5, clientId: "responder" });
  // Handlers run one message at a time: the delayed reply goes on by itself.
  client.on("svc/#", (m) => {
    const p = m.properties!;
    delay(text(m.payload)).then(() =>
      client.publish(p.responseTopic!, `re: ${text(m.payload)}`, {
        qos: 1,
        properties: { correlationData: p.correlationData },
      })
    ).catch(() => {});
  });
  await within(client.connect(), 3000, "responder");
  await client.subscribe("svc/#", 1);
  return client;
}

Deno.test("request(): concurrent requests each get their own reply; one SUBSCRIBE", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const release = deferred();
  // The first request's reply waits until the others are answered: replies come out of order.
  const server = await responder(broker, (p) => p === "0" ? release.promise : Promise.resolve());
  const delivered: string[] = [];
  const client = quickClient(broker, {
    protocolVersion: 5,
    clientId: "requester",
    onMessage: (topic) => void delivered.push(topic),
  });
  try {
    await within(client.connect(), 3000, "requester");
    const replies = [0, 1, 2, 3].map((i) => client.request("svc/echo", `${i}`));
    for (const r of replies) r.catch(() => {}); // awaited below; a failure must not go unhandled
    const later = await within(Promise.all(replies.slice(1)), 3000, "replies 1..3");
    assert.deepEqual(later.map((m) => text(m.payload)), ["re: 1", "re: 2", "re: 3"]);
    release.resolve();
    const first = await within(replies[0], 3000, "reply 0");
    assert.equal(text(first.payload), "re: 0");
    assert.match(first.topic, /^mqtt_async\/replies\/requester\//);
    const fifth: Message = await client.request("svc/echo", "4", { timeoutMs: 3000 });
    assert.equal(text(fifth.payload), "re: 4");
    const subscribes = broker.framesOf("subscribe", "toBroker")
      .filter((f) =>
        f.packet !== undefined && "subscriptions" in f.packet &&
        f.packet.subscriptions[0].topic === first.topic
      );
    assert.equal(subscribes.length, 1, "the response topic is subscribed once");
    assert.deepEqual(delivered, [], "replies do not reach onMessage");
    const sent = broker.framesOf("publish", "toBroker")
      .map((f) => f.packet as PublishPacket)
      .filter((p) => p.properties?.responseTopic === first.topic);
    assert.equal(sent.length, 5, "one PUBLISH per request, each with the response topic");
    assert.ok(sent.every((p) => p.properties?.correlationData?.length === 12));
  } finally {
    release.resolve();
    await client.disconnect();
    await server.disconnect();
  }
});

Deno.test("request(): a signal or timeoutMs ends the wait; 3.1.1 is a TypeError", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const client = quickClient(broker, { protocolVersion: 5, clientId: "lonely" });
  const v4 = quickClient(broker, { clientId: "old" });
  try {
    await within(client.connect(), 3000, "client");
    // Nobody answers on svc/void.
    const controller = new AbortController();
    const aborted = client.request("svc/void", "x", { signal: controller.signal });
    controller.abort(new Error("caller gave up"));
    await assert.rejects(within(aborted, 3000, "abort"), /caller gave up/);
    await assert.rejects(
      within(client.request("svc/void", "x", { timeoutMs: 100 }), 3000, "timeout"),
      (e) => e instanceof ResponseTimeoutError && /within 100 ms/.test(e.message),
    );
    await assert.rejects(client.request("svc/void", "x", { timeoutMs: -1 }), RangeError);
    await assert.rejects(
      client.request("svc/void", "x", { properties: { correlationData: bytes("c") } as never }),
      TypeError,
    );
    await assert.rejects(v4.request("svc/void", "x"), TypeError);
    const pending = client.request("svc/void", "late");
    await client.disconnect();
    await assert.rejects(within(pending, 3000, "closing"), /disconnected/);
  } finally {
    await client.disconnect();
    await v4.disconnect();
  }
});

// ---------------------------------------------------------------- enhanced authentication

Deno.test("auth: AUTH challenges while connecting go to the hook; its answers go back", async () => {
  await using broker = await FakeBroker.start();
  const challenges: string[] = [];
  const client = quickClient(broker, {
    protocolVersion: 5,
    auth: {
      method: "TEST-SCRAM",
      data: bytes("client-first"),
      onChallenge: async (data) => {
        challenges.push(text(data ?? new Uint8Array()));
        await Promise.resolve();
        return bytes(`answer-${challenges.length}`);
      },
    },
  });
  try {
    const connecting = client.connect();
    const conn = await broker.accept();
    const connect = await conn.expect("connect");
    assert.equal(connect.properties?.authenticationMethod, "TEST-SCRAM");
    assert.equal(text(connect.properties!.authenticationData!), "client-first");
    for (const n of [1, 2]) {
      await conn.send({
        cmd: "auth",
        reasonCode: 0x18,
        properties: { authenticationMethod: "TEST-SCRAM", authenticationData: bytes(`c${n}`) },
      });
      const answer = await conn.expect("auth");
      assert.equal(answer.reasonCode, 0x18);
      assert.equal(answer.properties?.authenticationMethod, "TEST-SCRAM");
      assert.equal(text(answer.properties!.authenticationData!), `answer-${n}`);
    }
    assert.equal(client.isConnected(), false, "not connected before CONNACK");
    await conn.send({ cmd: "connack", sessionPresent: false, reasonCode: 0 });
    await within(connecting, 3000, "connect()");
    assert.deepEqual(challenges, ["c1", "c2"]);
  } finally {
    await client.disconnect();
  }
});

Deno.test("auth: a method the broker refuses rejects connect() with its reason code", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { protocolVersion: 5, auth: { method: "NOPE" } });
  const connecting = client.connect();
  const conn = await broker.accept();
  await conn.handshake({ reasonCode: 0x8c, properties: { reasonString: "unknown method" } });
  await assert.rejects(
    within(connecting, 3000, "connect()"),
    (e) =>
      e instanceof ConnectionRefusedError && e.reasonCode === 0x8c &&
      /bad authentication method/i.test(e.message),
  );
  await client.disconnect();
});

Deno.test("auth: a hook that throws, a missing hook, or a foreign method fail the connect", async () => {
  await using broker = await FakeBroker.start();
  const cases = [
    {
      auth: { method: "M", onChallenge: () => Promise.reject(new Error("no secret")) },
      method: "M",
      error: (e: unknown) => e instanceof MQTTError && /auth\.onChallenge: no secret/.test(`${e}`),
    },
    {
      auth: { method: "M" },
      method: "M",
      error: (e: unknown) => e instanceof MQTTError && /onChallenge is not set/.test(`${e}`),
    },
    {
      auth: { method: "M", onChallenge: () => bytes("x") },
      method: "OTHER",
      error: (e: unknown) => e instanceof ProtocolError && /MQTT-3\.15\.2-1/.test(`${e}`),
    },
  ];
  for (const c of cases) {
    const client = quickClient(broker, { protocolVersion: 5, auth: c.auth });
    const connecting = client.connect();
    const conn = await broker.accept();
    await conn.expect("connect");
    await conn.send({
      cmd: "auth",
      reasonCode: 0x18,
      properties: { authenticationMethod: c.method },
    });
    await assert.rejects(within(connecting, 3000, "connect()"), c.error);
    await within(conn.closed, 3000, "the connection to close");
    await client.disconnect();
  }
});

Deno.test("auth: re-authentication on the live link, and a broker that refuses it", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await v5Connected(broker, {}, {
    auth: {
      method: "TEST",
      data: bytes("first"),
      onChallenge: (data) => bytes(`re-${text(data!)}`),
    },
  });
  try {
    const ok = client.reauthenticate({ data: bytes("again") });
    const start = await conn.expect("auth");
    assert.equal(start.reasonCode, 0x19);
    assert.equal(start.properties?.authenticationMethod, "TEST");
    assert.equal(text(start.properties!.authenticationData!), "again");
    await conn.send({
      cmd: "auth",
      reasonCode: 0x18,
      properties: { authenticationMethod: "TEST", authenticationData: bytes("nonce") },
    });
    const answer = await conn.expect("auth");
    assert.equal(answer.reasonCode, 0x18);
    assert.equal(text(answer.properties!.authenticationData!), "re-nonce");
    await conn.send({ cmd: "auth", reasonCode: 0, properties: { authenticationMethod: "TEST" } });
    await within(ok, 3000, "re-authentication");

    const refused = client.reauthenticate();
    const second = await conn.expect("auth");
    assert.equal(text(second.properties!.authenticationData!), "first", "auth.data by default");
    await conn.send({ cmd: "disconnect", reasonCode: 0x87 });
    await assert.rejects(
      within(refused, 3000, "refused re-authentication"),
      (e) => e instanceof ServerDisconnectError && e.reasonCode === 0x87,
    );
    const next = await broker.accept();
    await next.handshake({ sessionPresent: true });
    await until(() => client.isConnected(), 3000, "the reconnect");
    assert.ok(
      client.log.some((l) => /warn: .*not authorized/i.test(l)),
      "the DISCONNECT is logged",
    );
  } finally {
    await client.disconnect();
  }
});

Deno.test("auth: an AUTH the client did not ask for is a protocol error; reauthenticate() needs auth", async () => {
  await using broker = await FakeBroker.start();
  const { client, conn } = await v5Connected(broker, {});
  try {
    await assert.rejects(client.reauthenticate(), TypeError);
    await conn.send({ cmd: "auth", reasonCode: 0x18, properties: { authenticationMethod: "X" } });
    await within(conn.closed, 3000, "the client to close the connection");
    assert.ok(client.log.some((l) => /no authentication method/.test(l)), client.log.join("\n"));
  } finally {
    await client.disconnect();
  }
});
