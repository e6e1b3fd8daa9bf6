/**
 * The foundation's behaviours against a real mosquitto (started per test by
 * `brokerTest`): connect/disconnect and the clean-session semantics, QoS 0/1
 * round trips, exact payloads, PUBACK after the handler, wildcards,
 * unsubscribe, retained messages, refused credentials, persistent sessions.
 *
 * Skipped without mosquitto; failing instead with MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import { ConnectionRefusedError, type MQTTClient } from "../mod.ts";
import type { MessageHandler } from "../options.ts";
import {
  closeAll,
  connected,
  deferred,
  Links,
  proxyTo,
  quickClient,
  type TestClient,
  text,
  Watch,
  within,
} from "./helpers.ts";
import { brokerTest, type Mosquitto } from "./mosquitto.ts";

interface Got {
  topic: string;
  payload: Uint8Array;
  text: string;
  retained: boolean;
  qos: 0 | 1 | 2;
  dup: boolean;
}

/** Messages received by a client, with event-driven, bounded waits on them. */
class Inbox {
  readonly got: Got[] = [];
  readonly #watch = new Watch();

  readonly handler: MessageHandler = (topic, payload, retained, qos, dup) => {
    this.got.push({ topic, payload, text: text(payload), retained, qos, dup });
    this.#watch.changed();
  };

  /** `topic text` of every message, in arrival order. */
  lines(): string[] {
    return this.got.map((m) => `${m.topic} ${m.text}`);
  }

  /** Resolves once `predicate()` holds; rejects after `ms` with what arrived so far. */
  until(predicate: () => boolean, ms: number, what: string): Promise<void> {
    return this.#watch.until(
      predicate,
      ms,
      () => `${what}; received so far: ${JSON.stringify(this.lines())}`,
    );
  }

  /** Waits for `n` messages in total. */
  count(n: number, ms = 5000): Promise<void> {
    return this.until(() => this.got.length >= n, ms, `${n} messages`);
  }

  /** Waits for a message on `topic` whose text is `body`. */
  has(topic: string, body: string, ms = 5000): Promise<void> {
    return this.until(
      () => this.got.some((m) => m.topic === topic && m.text === body),
      ms,
      `"${body}" on ${topic}`,
    );
  }
}

/** The broker's log lines about client `id` connecting: `c1`/`c0` is its CleanSession flag. */
async function connectLines(broker: Mosquitto, id: string): Promise<string[]> {
  const lines = (await broker.log()).split("\n");
  return lines
    .filter((l) => l.includes("New client connected") && l.includes(` as ${id} `))
    .map((l) => l.match(/\((p\d+), (c\d), k(\d+)/)?.slice(1).join(" ") ?? l);
}

/** Polls the broker log (written by another process) until `predicate` holds. */
async function logUntil(
  broker: Mosquitto,
  predicate: (log: string) => boolean,
  what: string,
  ms = 3000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate(await broker.log())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what} in the log`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---- connect and disconnect ------------------------------------------------------

brokerTest(
  "clean: true connects with CleanSession=1, then 0; disconnect() says goodbye",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      const presence: boolean[] = [];
      const client = await connected(broker, clients, {
        clientId: "clean-true",
        clean: true,
        keepalive: 30,
        onConnect: (_c, sessionPresent) => {
          presence.push(sessionPresent);
        },
      });
      assert.equal(client.isConnected(), true);
      assert.deepEqual(presence, [false]);
      await logUntil(broker, (l) => (l.match(/ as clean-true /g) ?? []).length >= 2, "2 connects");
      // The dance: a clean slate first, then the session this client keeps.
      assert.deepEqual(await connectLines(broker, "clean-true"), ["p2 c1 30", "p2 c0 30"]);
      await client.disconnect();
      assert.equal(client.isConnected(), false);
      // DISCONNECT was sent (mosquitto says "disconnected", not "closed its connection").
      await logUntil(broker, (l) => l.includes("Client clean-true disconnected"), "the DISCONNECT");
      assert.doesNotMatch(await broker.log(), /clean-true closed its connection/);
      await assert.rejects(client.publish("t", "x"), /disconnect/);
    } finally {
      await closeAll(clients);
    }
  },
);

brokerTest(
  "clean: false connects once with CleanSession=0 and finds its session again",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      const presence: boolean[] = [];
      const options = {
        clientId: "clean-false",
        clean: false,
        onConnect: (_c: MQTTClient, sessionPresent: boolean) => {
          presence.push(sessionPresent);
        },
      };
      const first = await connected(broker, clients, options);
      assert.equal(first.isConnected(), true);
      await first.disconnect();
      await logUntil(
        broker,
        (l) => l.includes("Client clean-false disconnected"),
        "the DISCONNECT",
      );
      const second = await connected(broker, clients, options);
      assert.equal(second.isConnected(), true);
      await second.disconnect();
      assert.deepEqual(await connectLines(broker, "clean-false"), ["p2 c0 60", "p2 c0 60"]);
      assert.deepEqual(presence, [false, true], "the second connection resumes the session");
    } finally {
      await closeAll(clients);
    }
  },
);

// ---- round trips ------------------------------------------------------------------

brokerTest("QoS 0 and QoS 1 messages go from one client to another", async (broker) => {
  const clients: TestClient[] = [];
  try {
    const inbox = new Inbox();
    const sub = await connected(broker, clients, { clientId: "rt-sub", onMessage: inbox.handler });
    assert.equal(await sub.subscribe("rt/q0", 0), 0);
    assert.equal(await sub.subscribe("rt/q1", 1), 1);
    const pub = await connected(broker, clients, { clientId: "rt-pub" });
    await pub.publish("rt/q0", "zero", { qos: 0 });
    await pub.publish("rt/q1", "one", { qos: 1 });
    assert.equal(pub.inflightCount, 0, "a sync QoS 1 publish resolves after its PUBACK");
    await inbox.count(2);
    const byTopic = Object.fromEntries(inbox.got.map((m) => [m.topic, m]));
    assert.equal(byTopic["rt/q0"].text, "zero");
    assert.equal(byTopic["rt/q0"].qos, 0);
    assert.equal(byTopic["rt/q1"].text, "one");
    assert.equal(byTopic["rt/q1"].qos, 1);
    for (const m of inbox.got) {
      assert.equal(m.retained, false);
      assert.equal(m.dup, false);
    }
    // QoS is the minimum of publish and subscription QoS.
    await pub.publish("rt/q0", "one-on-zero", { qos: 1 });
    await inbox.has("rt/q0", "one-on-zero");
    assert.equal(inbox.got.at(-1)!.qos, 0);
  } finally {
    await closeAll(clients);
  }
});

brokerTest("payloads of 0 bytes, 1 MiB and every byte value arrive exact", async (broker) => {
  const clients: TestClient[] = [];
  try {
    const inbox = new Inbox();
    const sub = await connected(broker, clients, { clientId: "pl-sub", onMessage: inbox.handler });
    await sub.subscribe("pl/#", 1);
    const pub = await connected(broker, clients, { clientId: "pl-pub" });

    const empty = new Uint8Array(0);
    const big = new Uint8Array(1024 * 1024);
    for (let i = 0; i < big.length; i += 65_536) {
      crypto.getRandomValues(big.subarray(i, i + 65_536));
    }
    const bytes = Uint8Array.from({ length: 512 }, (_, i) => i % 256); // 0..255 twice
    await pub.publish("pl/empty", empty, { qos: 1 });
    await pub.publish("pl/big", big, { qos: 1 });
    await pub.publish("pl/bytes", bytes, { qos: 1 });
    await pub.publish("pl/bytes0", bytes, { qos: 0 });
    await inbox.count(4, 10_000);

    const got = Object.fromEntries(inbox.got.map((m) => [m.topic, m.payload]));
    assert.ok(got["pl/empty"] instanceof Uint8Array);
    assert.equal(got["pl/empty"].length, 0);
    assert.equal(got["pl/big"].length, big.length);
    assert.ok(equalBytes(got["pl/big"], big), "1 MiB payload differs");
    assert.deepEqual(Array.from(got["pl/bytes"]), Array.from(bytes));
    assert.deepEqual(Array.from(got["pl/bytes0"]), Array.from(bytes));
  } finally {
    await closeAll(clients);
  }
});

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---- PUBACK after the handler ------------------------------------------------------

brokerTest(
  "the PUBACK for a QoS 1 message goes out only after the async onMessage settles",
  async (broker) => {
    // mosquitto logs every packet it gets ("log_type all"); the log is the wire.
    const clients: TestClient[] = [];
    try {
      const entered = deferred();
      const release = deferred();
      const settled = deferred();
      const sub = await connected(broker, clients, {
        clientId: "slow-sub",
        onMessage: async () => {
          entered.resolve();
          await release.promise;
          settled.resolve();
        },
      });
      await sub.subscribe("slow/t", 1);
      const pub = await connected(broker, clients, { clientId: "slow-pub" });
      await pub.publish("slow/t", "m1", { qos: 1 });
      await within(entered.promise, 5000, "the handler to start");

      // A QoS 1 round trip on the subscriber's own link while the handler is
      // blocked: a PUBACK sent early would be ahead of this PUBLISH on the stream,
      // so the broker would have logged it before logging the barrier.
      await within(sub.publish("slow/barrier", "b", { qos: 1 }), 5000, "the barrier's PUBACK");
      await logUntil(broker, (l) => l.includes("Received PUBLISH from slow-sub"), "the barrier");
      const before = await broker.log();
      assert.doesNotMatch(
        before,
        /Received PUBACK from slow-sub/,
        "PUBACK sent before the handler settled",
      );

      release.resolve();
      await within(settled.promise, 5000, "the handler to settle");
      await logUntil(
        broker,
        (l) => /Received PUBACK from slow-sub \(Mid: \d+/.test(l),
        "the PUBACK",
      );
      const log = await broker.log();
      assert.ok(
        log.indexOf("Received PUBLISH from slow-sub") <
          log.indexOf("Received PUBACK from slow-sub"),
      );
    } finally {
      await closeAll(clients);
    }
  },
  { extraConfig: "log_type all" },
);

brokerTest(
  "a QoS 1 message whose handler was still running when the link dropped is delivered again",
  async (broker) => {
    // The subscriber goes through a proxy so the test can cut its link while its
    // handler is busy. The PUBACK must not have gone out, so the broker re-sends
    // the message (DUP) on the next connection: right behind the CONNACK.
    await using proxy = await proxyTo(broker);
    const clients: TestClient[] = [];
    try {
      const entered = deferred();
      const release = deferred();
      const calls: { text: string; dup: boolean }[] = [];
      const inbox = new Inbox();
      const links = new Links();
      const sub = await connected(proxy, clients, {
        clientId: "slow-sub",
        clean: false,
        onConnectionChange: links.handler,
        onMessage: async (topic, payload, retained, qos, dup) => {
          calls.push({ text: text(payload), dup });
          inbox.handler(topic, payload, retained, qos, dup);
          if (calls.length === 1) {
            entered.resolve();
            await release.promise;
          }
        },
      });
      await sub.subscribe("slow/t", 1);
      const pub = await connected(broker, clients, { clientId: "slow-pub" });

      await pub.publish("slow/t", "m1", { qos: 1 });
      await within(entered.promise, 5000, "the handler to start");
      // A round trip on the subscriber's own link while the handler is blocked: a
      // PUBACK sent early would be ahead of this PUBLISH on the same TCP stream.
      await within(sub.publish("slow/barrier", "b", { qos: 1 }), 5000, "barrier PUBACK");
      proxy.cutAll();
      await links.ups(2, 5000);
      release.resolve();
      await inbox.until(() => calls.length >= 2, 5000, "the broker's re-delivery of m1");
      assert.deepEqual(calls, [{ text: "m1", dup: false }, { text: "m1", dup: true }]);

      // The second handler returned at once, so its PUBACK went out: after another
      // cut the broker has nothing to re-send, and m2 arrives with m1 not repeated.
      await within(sub.publish("slow/barrier", "b2", { qos: 1 }), 5000, "barrier PUBACK");
      proxy.cutAll();
      await links.ups(3, 5000);
      await pub.publish("slow/t", "m2", { qos: 1 });
      await inbox.has("slow/t", "m2");
      assert.deepEqual(calls.map((c) => c.text), ["m1", "m1", "m2"]);
    } finally {
      await closeAll(clients);
    }
  },
);

// ---- subscriptions ----------------------------------------------------------------

brokerTest(
  "subscriptions with + and # wildcards get exactly the matching topics",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      const inbox = new Inbox();
      const sub = await connected(broker, clients, {
        clientId: "wc-sub",
        onMessage: inbox.handler,
      });
      await sub.subscribe("w/+/temp", 1);
      await sub.subscribe("x/#", 1);
      const pub = await connected(broker, clients, { clientId: "wc-pub" });
      const topics = [
        "w/kitchen/temp", // +
        "w/kitchen/hum", // no
        "w/a/b/temp", // no: + is one level
        "w//temp", // +: an empty level
        "x", // #: also the parent level
        "x/y/z", // #
        "xx/y", // no
        "y/x", // no
      ];
      for (const topic of topics) await pub.publish(topic, topic, { qos: 1 });
      await pub.publish("x/end", "end", { qos: 1 });
      await inbox.has("x/end", "end");
      assert.deepEqual(
        inbox.got.map((m) => m.topic).sort(),
        ["w/kitchen/temp", "w//temp", "x", "x/y/z", "x/end"].sort(),
      );
    } finally {
      await closeAll(clients);
    }
  },
);

brokerTest("unsubscribe stops delivery on that filter and leaves the others", async (broker) => {
  const clients: TestClient[] = [];
  try {
    const inbox = new Inbox();
    const sub = await connected(broker, clients, { clientId: "un-sub", onMessage: inbox.handler });
    await sub.subscribe("u/a", 1);
    await sub.subscribe("u/b", 1);
    const pub = await connected(broker, clients, { clientId: "un-pub" });
    await pub.publish("u/a", "before", { qos: 1 });
    await pub.publish("u/b", "before", { qos: 1 });
    await inbox.count(2);

    await sub.unsubscribe("u/a");
    // Same publisher, same subscriber, QoS 1: the broker keeps the order, so a
    // message on u/a would arrive before the one on u/b that follows it.
    await pub.publish("u/a", "after", { qos: 1 });
    await pub.publish("u/b", "after", { qos: 1 });
    await inbox.has("u/b", "after");
    assert.deepEqual(inbox.lines(), ["u/a before", "u/b before", "u/b after"]);
  } finally {
    await closeAll(clients);
  }
});

brokerTest("a retained message reaches a late subscriber flagged retained", async (broker) => {
  const clients: TestClient[] = [];
  try {
    const live = new Inbox();
    const early = await connected(broker, clients, {
      clientId: "ret-early",
      onMessage: live.handler,
    });
    await early.subscribe("ret/#", 1);
    const pub = await connected(broker, clients, { clientId: "ret-pub" });
    await pub.publish("ret/status", "online", { qos: 1, retain: true });
    await live.has("ret/status", "online");
    // A subscriber that was already there gets it as a live message (MQTT-3.3.1-9).
    assert.equal(live.got[0].retained, false);

    const late = new Inbox();
    const lateClient = await connected(broker, clients, {
      clientId: "ret-late",
      onMessage: late.handler,
    });
    await lateClient.subscribe("ret/+", 1);
    await late.has("ret/status", "online");
    assert.equal(late.got.length, 1);
    assert.equal(late.got[0].retained, true);
    assert.equal(late.got[0].qos, 1);
  } finally {
    await closeAll(clients);
  }
});

// ---- refused connections ----------------------------------------------------------

brokerTest(
  "a wrong password makes connect() reject with ConnectionRefusedError naming the reason",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      for (const auth of [{ user: "alice", password: "wrong-7f3a" }, {}]) {
        const client = quickClient(broker, { clientId: "auth-bad", ...auth });
        clients.push(client);
        const error = await within(
          client.connect().then(() => undefined, (e) => e),
          5000,
          "connect() to be refused",
        );
        assert.ok(error instanceof ConnectionRefusedError, `got ${error}`);
        assert.match(error.message, /not authorized|bad user name or password/);
        assert.ok(error.code === 4 || error.code === 5, `CONNACK code ${error.code}`);
        assert.equal(client.isConnected(), false);
        assert.ok(!client.log.join("\n").includes("7f3a"), "the password must not be logged");
      }
      const good = await connected(broker, clients, {
        clientId: "auth-good",
        user: "alice",
        password: "s3cret",
      });
      assert.equal(good.isConnected(), true);
    } finally {
      await closeAll(clients);
    }
  },
  { users: { alice: "s3cret" } },
);

brokerTest(
  "a refused connect() leaves nothing running: a script that catches it exits promptly",
  async (broker) => {
    const mod = new URL("../mod.ts", import.meta.url).href;
    const script = `
    import { MQTTClient, silentLogger } from ${JSON.stringify(mod)};
    const client = new MQTTClient({
      server: "127.0.0.1", port: ${broker.port}, clientId: "auth-script",
      user: "alice", password: "wrong", responseTime: 30, logger: silentLogger,
    });
    try { await client.connect(); } catch (error) { console.log(error.name); }
  `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const output = child.output();
    try {
      // responseTime is 30 s: a timer left behind would keep the script alive that long.
      const result = await within(output, 5000, "the script to exit after the refused connect");
      const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, out);
      assert.match(out, /ConnectionRefusedError/);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
      await output;
      throw error;
    }
  },
  { users: { alice: "s3cret" } },
);

// ---- persistent sessions ------------------------------------------------------------

brokerTest(
  "a persistent session: QoS 1 messages published while away arrive on the next connect",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      const first = await connected(broker, clients, { clientId: "persist", clean: false });
      await first.subscribe("ps/#", 1);
      await first.disconnect();

      const pub = await connected(broker, clients, { clientId: "ps-pub" });
      for (let i = 0; i < 5; i++) await pub.publish(`ps/${i}`, `away ${i}`, { qos: 1 });
      await pub.publish("ps/q0", "qos 0 is not kept", { qos: 0 });

      const inbox = new Inbox();
      let sessionPresent: boolean | undefined;
      await connected(broker, clients, {
        clientId: "persist",
        clean: false,
        onMessage: inbox.handler,
        onConnect: (_c, present) => {
          sessionPresent = present;
        },
      });
      await inbox.count(5);
      assert.equal(sessionPresent, true);
      // No subscribe on this connection: the stored subscription delivers too.
      await pub.publish("ps/live", "live", { qos: 1 });
      await inbox.has("ps/live", "live");
      assert.deepEqual(inbox.lines(), [
        "ps/0 away 0",
        "ps/1 away 1",
        "ps/2 away 2",
        "ps/3 away 3",
        "ps/4 away 4",
        "ps/live live",
      ]);
    } finally {
      await closeAll(clients);
    }
  },
);

brokerTest(
  "clean: true discards a stored session: nothing queued for it arrives",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      const first = await connected(broker, clients, { clientId: "wiped", clean: false });
      await first.subscribe("wp/#", 1);
      await first.disconnect();
      const pub = await connected(broker, clients, { clientId: "wp-pub" });
      await pub.publish("wp/old", "queued for the old session", { qos: 1 });

      const inbox = new Inbox();
      let sessionPresent: boolean | undefined;
      const fresh = await connected(broker, clients, {
        clientId: "wiped",
        clean: true,
        onMessage: inbox.handler,
        onConnect: (_c, present) => {
          sessionPresent = present;
        },
      });
      assert.equal(sessionPresent, false);
      // The old subscription is gone too: subscribe anew and send a marker; a
      // queued message would have been delivered right after CONNACK, before it.
      await fresh.subscribe("wp/#", 1);
      await pub.publish("wp/new", "marker", { qos: 1 });
      await inbox.has("wp/new", "marker");
      assert.deepEqual(inbox.lines(), ["wp/new marker"]);
    } finally {
      await closeAll(clients);
    }
  },
);
