/**
 * Failover across a server list, on the wire.
 *
 * Against two private mosquittos (each behind a fault proxy that counts the
 * client's connection attempts): a QoS 1 stream survives the first broker's
 * death mid-stream, every resolved message reaching a subscriber on one
 * broker or the other; the client then stays on the second broker while it
 * works (sticky), and while both are down it tries each within the back-off
 * bounds instead of hammering one.
 *
 * Against two scripted MQTT 5 fake brokers: a server DISCONNECT "use another
 * server" (0x9C) or "server moved" (0x9D), and a CONNACK refusing with 0x9C,
 * send the client to the next server (or to the one the Server Reference
 * names), with its un-ACKed publishes re-sent there.
 *
 * The mosquitto tests skip without mosquitto; they fail instead with
 * MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import { MQTTClient } from "../mod.ts";
import type { MQTTClientOptions } from "../options.ts";
import { FakeBroker } from "../testing.ts";
import type { FaultProxy } from "./fault_proxy.ts";
import {
  captureLogger,
  closeAll,
  connected,
  Links,
  proxyTo,
  type TestClient,
  text,
  until,
  Watch,
  within,
} from "./helpers.ts";
import { brokerTest, type Mosquitto, startMosquitto } from "./mosquitto.ts";

const N = 3000;
const KILL_AT = 800; // resolved publishes before the first broker is frozen and killed
const INITIAL_DELAY_S = 0.05;
const MAX_DELAY_S = 0.4;
const BOUNCE_AFTER = 3;
const BOTH_DOWN_MS = 2000;

/**
 * mosquitto drops QoS 1 messages for a subscriber whose queue holds 1000
 * (`max_queued_messages`): the stream outruns the subscribers, and a drop
 * there would be the broker's loss, not the client's.
 */
const UNLIMITED_QUEUE = "max_queued_messages 0";

const url = (target: { hostname: string; port: number }) =>
  `mqtt://${target.hostname}:${target.port}`;

/** A client with only a `servers` list (no `server`), quick timings and a captured log. */
function failoverClient(servers: string[], options: Partial<MQTTClientOptions> = {}): TestClient {
  const logger = captureLogger();
  const client = new MQTTClient({
    servers,
    clientId: "failover",
    clean: false,
    responseTime: 1,
    reconnect: {
      initialDelay: INITIAL_DELAY_S,
      maxDelay: MAX_DELAY_S,
      bounceAfter: BOUNCE_AFTER,
    },
    logger,
    ...options,
  });
  return Object.assign(client, { log: logger.lines });
}

/** The payloads a subscriber received, as a set, with bounded waits on it. */
class Seen {
  readonly got = new Set<string>();
  readonly watch = new Watch();
  readonly handler = (_topic: string, payload: Uint8Array): void => {
    this.got.add(text(payload));
    this.watch.changed();
  };
}

/** Records when each new connection reaches `proxy`, until `stop()` is called. */
function recordAttempts(
  proxy: FaultProxy,
  name: string,
  out: { name: string; at: number }[],
): { stop: () => void; done: Promise<void> } {
  let stopped = false;
  const done = (async () => {
    let n = proxy.connectionCount;
    while (!stopped) {
      try {
        await proxy.waitForConnections(n + 1, 200);
      } catch {
        continue; // nothing within 200 ms: look at `stopped` again
      }
      n = proxy.connectionCount;
      if (!stopped) out.push({ name, at: performance.now() });
    }
  })();
  return { stop: () => stopped = true, done };
}

/**
 * The most connection attempts the back-off allows in `windowMs`: one at
 * once, then one after each sleep, and each sleep is at least half its span
 * (the span doubling from the first delay up to the cap).
 */
function maxAttempts(windowMs: number): number {
  let attempts = 1;
  let elapsed = 0;
  for (let i = 0;; i++) {
    const span = Math.min(MAX_DELAY_S * 1000, INITIAL_DELAY_S * 1000 * 2 ** i);
    elapsed += span / 2;
    if (elapsed > windowMs) return attempts;
    attempts++;
  }
}

brokerTest(
  "failover: a QoS 1 stream survives the first broker's death; sticky on the second; no hammering",
  async (brokerA) => {
    const brokerB: Mosquitto = await startMosquitto({ extraConfig: UNLIMITED_QUEUE });
    const proxyA = await proxyTo(brokerA);
    const proxyB = await proxyTo(brokerB);
    const clients: TestClient[] = [];
    try {
      // A subscriber on each broker, connected directly (not through the proxies).
      const seenA = new Seen();
      const seenB = new Seen();
      for (
        const [broker, seen, id] of [[brokerA, seenA, "sub-a"], [brokerB, seenB, "sub-b"]] as const
      ) {
        const sub = await connected(broker, clients, {
          clientId: id,
          onMessage: seen.handler,
        });
        await sub.subscribe("stream/#", 1);
      }

      const links = new Links();
      const client = failoverClient([url(proxyA), url(proxyB)], {
        onConnectionChange: links.handler,
        // A small window bounds what A can have received when the link is frozen, so
        // most of the stream is left for B however many PUBACKs one read carries.
        maxInflight: 100,
      });
      clients.push(client);
      await within(client.connect(), 5000, "connect() to the first server");
      assert.equal(proxyA.connectionCount, 1, "the first server of the list comes first");
      assert.equal(proxyB.connectionCount, 0);

      // The stream: every publish waits for its PUBACK (sync: true), all in flight at once.
      const resolved = new Set<string>();
      const fromA = new Set<string>();
      const progress = new Watch();
      let failures = 0;
      const calls: Promise<void>[] = [];
      for (let i = 0; i < N; i++) {
        const body = String(i);
        calls.push(
          client.publish("stream/x", body, { qos: 1 }).then(() => {
            resolved.add(body);
            if (links.down === 0) fromA.add(body); // acknowledged on the first link: by A
            // Freeze the link to A at once, mid-stream: nothing more goes either way.
            if (resolved.size === KILL_AT) proxyA.blackhole(true);
            progress.changed();
          }, () => {
            failures++;
          }),
        );
      }
      await progress.until(() => proxyA.blackholed, 10_000, () => `${KILL_AT} PUBACKs from A`);
      assert.ok(resolved.size < N, "the stream was still under way when A was frozen");

      // End the frozen link (what A sent since is dropped): once the client saw it
      // go down, fromA, the messages A acknowledged, is final.
      proxyA.cutAll();
      await links.downs(1);
      assert.ok(fromA.size < N, "the stream was still under way when A's link ended");
      // They reached A's subscriber (A still runs; the client's new attempts on A hang in
      // the frozen proxy, so none of them gets a CONNACK from A). Then A dies.
      const notOnA = () => [...fromA].filter((m) => !seenA.got.has(m));
      await seenA.watch.until(
        () => notOnA().length === 0,
        5000,
        () =>
          `A's subscriber to have all ${fromA.size} messages A acknowledged; missing ${notOnA().length}: ${
            notOnA().slice(0, 10)
          }`,
      );
      const resolvedOnA = fromA.size;
      await brokerA.stop();
      proxyA.cutAll(); // attempts held by the frozen proxy
      proxyA.blackhole(false); // from now on an attempt on A finds it dead

      // The client moves to B and the rest of the stream, re-sends included, completes there.
      await links.ups(2, 10_000);
      assert.ok(proxyB.connectionCount >= 1, "the client went on to the second server");
      await within(Promise.all(calls), 20_000, "every publish to resolve");
      assert.equal(failures, 0, "no publish failed because of the failover");
      assert.equal(resolved.size, N);
      assert.ok(resolved.size > resolvedOnA, "messages were acknowledged by B");
      const missing = () => [...resolved].filter((m) => !seenA.got.has(m) && !seenB.got.has(m));
      await seenB.watch.until(
        () => missing().length === 0,
        10_000,
        () =>
          `every resolved message on A or B; missing ${missing().length}: ${
            missing().slice(0, 10)
          }`,
      );
      assert.match(
        client.log.join("\n"),
        new RegExp(`moving on to 127\\.0\\.0\\.1:${proxyB.port}`),
      );

      // Sticky: A is back, B's link drops once; the client returns to B, not to A.
      await brokerA.restart();
      const attemptsOnA = proxyA.connectionCount;
      const attemptsOnB = proxyB.connectionCount;
      proxyB.cutAll();
      await links.ups(3, 10_000);
      assert.equal(proxyA.connectionCount, attemptsOnA, "the client went back to A while B worked");
      assert.equal(proxyB.connectionCount, attemptsOnB + 1, "one attempt on B brought it back");
      await within(client.publish("stream/x", "after-sticky", { qos: 1 }), 5000, "a publish on B");
      await seenB.watch.until(() => seenB.got.has("after-sticky"), 5000, () => "after-sticky on B");
      assert.equal(proxyA.connectionCount, attemptsOnA, "no attempt on A while B works");

      // Both down: the client tries each, round the list, within the back-off bounds.
      const attempts: { name: string; at: number }[] = [];
      proxyA.refuse(true);
      proxyB.refuse(true);
      const recA = recordAttempts(proxyA, "A", attempts);
      const recB = recordAttempts(proxyB, "B", attempts);
      const downAt = performance.now();
      proxyB.cutAll();
      await new Promise((resolve) => setTimeout(resolve, BOTH_DOWN_MS)); // a window to count in
      recA.stop();
      recB.stop();
      await Promise.all([recA.done, recB.done]);
      const windowMs = performance.now() - downAt;
      attempts.sort((x, y) => x.at - y.at);
      const sequence = attempts.map((a) => a.name).join("");
      const limit = maxAttempts(windowMs);
      assert.ok(
        attempts.length <= limit,
        `${attempts.length} attempts in ${
          windowMs.toFixed(0)
        } ms exceed the back-off's ${limit}: ${sequence}`,
      );
      // Slowest pace: a sleep is at most the cap, and an attempt on a refusing proxy is quick.
      assert.ok(attempts.length >= 3, `too few attempts (${sequence}): the client gave up?`);
      assert.match(sequence, /A/, `A was never tried: ${sequence}`);
      assert.match(sequence, /B/, `B was never tried: ${sequence}`);
      assert.equal(sequence[0], "B", "the first attempt goes to the server that worked");
      assert.doesNotMatch(
        sequence,
        new RegExp(`A{${BOUNCE_AFTER + 1}}|B{${BOUNCE_AFTER + 1}}`),
        `more than ${BOUNCE_AFTER} attempts in a row on one server: ${sequence}`,
      );
      for (const name of ["A", "B"]) {
        const times = attempts.filter((a) => a.name === name).map((a) => a.at);
        for (let i = 1; i < times.length; i++) {
          assert.ok(
            times[i] - times[i - 1] >= (INITIAL_DELAY_S * 1000) / 2 - 5,
            `attempts on ${name} only ${(times[i] - times[i - 1]).toFixed(1)} ms apart`,
          );
        }
      }

      // Both back: the client connects again and the session goes on.
      proxyA.refuse(false);
      proxyB.refuse(false);
      await links.ups(4, 10_000);
      await within(client.publish("stream/x", "after-outage", { qos: 1 }), 5000, "a publish");
      await until(
        () => seenA.got.has("after-outage") || seenB.got.has("after-outage"),
        5000,
        "after-outage on a subscriber",
      );
    } finally {
      await closeAll(clients);
      await proxyA.close();
      await proxyB.close();
      await brokerB.close();
    }
  },
  { extraConfig: UNLIMITED_QUEUE },
);

brokerTest(
  "a broker that drops each connection right after CONNACK (a takeover loop) is not redialled at once",
  async (broker) => {
    const proxy = await proxyTo(broker);
    const clients: TestClient[] = [];
    try {
      // Two clients with one explicit id: mosquitto closes the older connection at every CONNECT.
      const initialDelayMs = 100;
      for (let i = 0; i < 2; i++) {
        await connected(proxy, clients, {
          clientId: "same-id",
          reconnect: { initialDelay: initialDelayMs / 1000, maxDelay: 1 },
        });
      }
      const start = proxy.connectionCount;
      const windowMs = 1000;
      await new Promise((resolve) => setTimeout(resolve, windowMs)); // a window to count in
      const dials = proxy.connectionCount - start;
      // Each client waits at least half the first delay after each loss before it dials again.
      const limit = 2 * (windowMs / (initialDelayMs / 2) + 1);
      assert.ok(dials <= limit, `${dials} connections in ${windowMs} ms (at most ${limit})`);
      assert.ok(dials >= 2, `${dials} connections: the takeover loop did not happen`);
    } finally {
      await closeAll(clients);
      await proxy.close();
    }
  },
);

// ---- MQTT 5: the broker sends the client elsewhere ----------------------------------------

for (const [code, name] of [[0x9c, "use another server"], [0x9d, "server moved"]] as const) {
  Deno.test(`v5 DISCONNECT 0x${code.toString(16)} (${name}) moves the client to the next server`, async () => {
    await using first = await FakeBroker.start();
    await using second = await FakeBroker.start();
    const links = new Links();
    const client = failoverClient([url(first), url(second)], {
      protocolVersion: 5,
      onConnectionChange: links.handler,
    });
    try {
      const connecting = client.connect();
      const one = await first.accept();
      await one.handshake();
      await within(connecting, 2000, "connect()");
      one.autoPingresp();
      const pending = client.publish("t", "unacked", { qos: 1 });
      const original = await one.expect("publish");
      await one.send({ cmd: "disconnect", reasonCode: code, properties: { reasonString: name } });
      one.close();

      const two = await second.accept();
      await two.handshake();
      two.autoPingresp();
      const resent = await two.expect("publish");
      assert.equal(resent.messageId, original.messageId, "re-sent with its original packet id");
      assert.equal(resent.dup, true, "re-sent with DUP");
      assert.equal(text(resent.payload as Uint8Array), "unacked");
      await two.send({ cmd: "puback", messageId: resent.messageId! });
      await within(pending, 2000, "the publish, acknowledged by the second server");
      await links.ups(2);
      assert.equal(
        first.connectionCount,
        1,
        "no attempt went back to the server that sent it away",
      );
      assert.match(
        client.log.join("\n"),
        new RegExp(`moving on to 127\\.0\\.0\\.1:${second.port}`),
      );
    } finally {
      await client.disconnect();
    }
  });
}

Deno.test("v5 DISCONNECT 0x9d with a Server Reference goes to the server it names", async () => {
  await using first = await FakeBroker.start();
  await using listed = await FakeBroker.start();
  await using named = await FakeBroker.start();
  const client = failoverClient([url(first), url(listed)], { protocolVersion: 5 });
  try {
    const connecting = client.connect();
    const one = await first.accept();
    await one.handshake();
    await within(connecting, 2000, "connect()");
    await one.send({
      cmd: "disconnect",
      reasonCode: 0x9d,
      properties: { serverReference: `127.0.0.1:${named.port}` },
    });
    one.close();
    const two = await named.accept();
    await two.handshake();
    two.autoAck();
    await within(client.publish("t", "there", { qos: 1 }), 2000, "a publish on the named server");
    assert.equal(listed.connectionCount, 0, "the next listed server was not tried");
    assert.equal(first.connectionCount, 1);
  } finally {
    await client.disconnect();
  }
});

Deno.test("v5 CONNACK 0x9c (use another server) sends the background loop to the next server", async () => {
  await using first = await FakeBroker.start();
  await using second = await FakeBroker.start();
  const links = new Links();
  const client = failoverClient([url(first), url(second)], {
    protocolVersion: 5,
    onConnectionChange: links.handler,
  });
  try {
    client.start();
    const one = await first.accept();
    await one.handshake({ reasonCode: 0x9c });
    const two = await second.accept();
    await two.handshake();
    two.autoPingresp();
    await links.ups(1);
    assert.equal(first.connectionCount, 1, "the refusing server was not tried again");
  } finally {
    await client.disconnect();
  }
});

// ---- connect() with a server list ---------------------------------------------------------

brokerTest(
  "connect() with the first server down connects to the next one, and stays there",
  async (broker) => {
    const down = await proxyTo(broker);
    down.refuse(true); // accepts and closes at once: a server that is down, counted
    const up = await proxyTo(broker);
    const links = new Links();
    const client = failoverClient([url(down), url(up)], { onConnectionChange: links.handler });
    try {
      await within(client.connect(), 5000, "connect() over the list");
      assert.equal(down.connectionCount, 1, "one attempt on the server that is down");
      assert.equal(up.connectionCount, 1);
      up.cutAll();
      await links.ups(2);
      assert.equal(down.connectionCount, 1, "the reconnect went to the server that worked");
      assert.equal(up.connectionCount, 2);
    } finally {
      await client.disconnect();
      await down.close();
      await up.close();
    }
  },
);

Deno.test("v5 CONNACK 0x9c (use another server) at connect() goes on to the next server", async () => {
  await using first = await FakeBroker.start();
  await using second = await FakeBroker.start();
  const client = failoverClient([url(first), url(second)], { protocolVersion: 5 });
  try {
    const connecting = client.connect();
    const one = await first.accept();
    await one.handshake({ reasonCode: 0x9c });
    const two = await second.accept();
    await two.handshake();
    two.autoPingresp();
    await within(connecting, 2000, "connect() on the second server");
    assert.equal(first.connectionCount, 1);
  } finally {
    await client.disconnect();
  }
});

Deno.test("connect() with every server down rejects after one attempt on each", async () => {
  await using first = await FakeBroker.start();
  await using second = await FakeBroker.start();
  first.refuseConnections(true);
  second.refuseConnections(true);
  const client = failoverClient([url(first), url(second)]);
  try {
    await assert.rejects(within(client.connect(), 5000, "connect()"));
    assert.deepEqual([first.refusedCount, second.refusedCount], [1, 1]);
  } finally {
    await client.disconnect();
  }
});
