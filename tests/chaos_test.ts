/**
 * The reliability engine against a real mosquitto through the fault proxy:
 * a 10 000-message QoS 1 stream survives cuts, a half-open link and refused
 * reconnects without losing or reordering a message; a broker restart with
 * persistence loses nothing either.
 *
 * Figures (duplicates per fault, detection time, msgs/s) are printed, never
 * asserted. Skipped without mosquitto; failing with MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import { ConnectionRefusedError, type MQTTClient } from "../mod.ts";
import type { MessageHandler, MQTTClientOptions } from "../options.ts";
import {
  closeAll,
  connected,
  Links,
  proxyTo,
  quickClient,
  type TestClient,
  text,
  Watch,
  within,
} from "./helpers.ts";
import type { FaultProxy } from "./fault_proxy.ts";
import { brokerTest } from "./mosquitto.ts";

const N = 10_000;
const TOPIC = "chaos/stream";
const FILLER = "x".repeat(56);

/** mosquitto drops QoS 1 messages beyond 1000 queued per client by default; not here. */
const UNLIMITED_QUEUE = "max_queued_messages 0";

/**
 * The independent subscriber's view of the stream: payloads carry a sequence
 * number; first occurrences must come in order 0, 1, 2, ...; repeats are
 * duplicates (allowed by QoS 1, counted).
 */
class StreamCheck {
  readonly seen = new Uint8Array(N);
  firsts = 0;
  total = 0;
  readonly outOfOrder: string[] = [];
  readonly watch = new Watch();

  get duplicates(): number {
    return this.total - this.firsts;
  }

  readonly handler: MessageHandler = (topic, payload) => {
    if (topic !== TOPIC) return;
    const seq = Number.parseInt(text(payload), 10);
    this.total++;
    if (this.seen[seq]) {
      // A duplicate: fine for QoS 1.
    } else {
      this.seen[seq] = 1;
      if (seq !== this.firsts && this.outOfOrder.length < 10) {
        this.outOfOrder.push(`#${seq} arrived first after ${this.firsts} others`);
      }
      this.firsts++;
    }
    this.watch.changed();
  };

  reach(firsts: number, ms: number): Promise<void> {
    return this.watch.until(
      () => this.firsts >= firsts,
      ms,
      () => `${firsts} distinct messages (have ${this.firsts}, ${this.duplicates} duplicates)`,
    );
  }
}

function payload(seq: number): string {
  return `${String(seq).padStart(8, "0")} ${FILLER}`;
}

/** Streams N QoS 1 messages (N-1 sync:false, the last sync:true); returns msgs/s. */
async function stream(client: MQTTClient): Promise<number> {
  const start = performance.now();
  for (let seq = 0; seq < N - 1; seq++) {
    await client.publish(TOPIC, payload(seq), { qos: 1, sync: false });
  }
  await client.publish(TOPIC, payload(N - 1), { qos: 1, sync: true });
  return N / ((performance.now() - start) / 1000);
}

/** The subscriber, directly on the broker: persistent session, QoS 1, subscribed up front. */
async function subscriber(
  broker: { hostname: string; port: number },
  check: StreamCheck,
): Promise<TestClient> {
  const client = quickClient(broker, {
    clientId: "chaos-sub",
    clean: false,
    onMessage: check.handler,
  });
  await within(client.connect(), 5000, "the subscriber to connect");
  assert.equal(await client.subscribe(TOPIC, 1), 1);
  return client;
}

function publisherOptions(extra: Partial<MQTTClientOptions>): Partial<MQTTClientOptions> {
  return {
    clientId: "chaos-pub",
    clean: false,
    keepalive: 1,
    reconnect: { initialDelay: 0.02, maxDelay: 0.2 },
    ...extra,
  };
}

/**
 * The subscriber directly on `broker` and the publisher through a fault proxy,
 * both connected; runs `body`, then disconnects both and stops the proxy.
 */
async function withStream(
  broker: { hostname: string; port: number },
  publisher: Partial<MQTTClientOptions>,
  body: (proxy: FaultProxy, check: StreamCheck, pub: TestClient) => Promise<void>,
): Promise<void> {
  await using proxy = await proxyTo(broker);
  const check = new StreamCheck();
  const clients: TestClient[] = [];
  try {
    clients.push(await subscriber(broker, check));
    const pub = await connected(proxy, clients, publisherOptions(publisher));
    await body(proxy, check, pub);
  } finally {
    await closeAll(clients);
  }
}

function assertComplete(check: StreamCheck): void {
  assert.deepEqual(check.outOfOrder, [], "first occurrences out of order");
  assert.equal(check.firsts, N, "distinct messages received");
  for (let seq = 0; seq < N; seq++) assert.equal(check.seen[seq], 1, `message #${seq} missing`);
}

interface Fault {
  kind: "cut" | "half-open" | "refuse";
  at: number; // distinct messages the subscriber had when it began
  duplicatesBefore: number;
  streaming: boolean; // the publisher had not finished yet
  note: string;
}

brokerTest(
  "10 000 QoS 1 messages through 6 cuts, a half-open link and refused reconnects: none lost, in order",
  (broker) =>
    withStream(broker, { responseTime: 0.5 }, async (proxy, check, pub) => {
      let streaming = true;
      const faults: Fault[] = [];
      const begin = (kind: Fault["kind"]): Fault => {
        const fault = {
          kind,
          at: check.firsts,
          duplicatesBefore: check.duplicates,
          streaming,
          note: "",
        };
        faults.push(fault);
        return fault;
      };
      const cut = () => {
        begin("cut");
        proxy.cutAll();
      };

      // Faults are triggered by the subscriber's progress, never by timers.
      const script = async () => {
        const wait = (n: number) => check.reach(n, 20_000);
        await wait(1000);
        cut();
        await wait(2000);
        {
          // Half-open: the link stays up but nothing flows. The client must notice
          // (no PUBACK / PINGRESP within responseTime) and dial again.
          const fault = begin("half-open");
          const connections = proxy.connectionCount;
          const start = performance.now();
          proxy.blackhole(true);
          await proxy.waitForConnections(connections + 1, 5000);
          const detectedMs = performance.now() - start;
          proxy.blackhole(false);
          fault.note = `new connection ${detectedMs.toFixed(0)} ms after the link went silent`;
          console.log(`half-open link detected and redialled after ${detectedMs.toFixed(0)} ms`);
        }
        await wait(3000);
        cut();
        await wait(4000);
        {
          // Refused: the link is cut and the next attempts are closed at once.
          const fault = begin("refuse");
          const connections = proxy.connectionCount;
          proxy.refuse(true);
          proxy.cutAll();
          await proxy.waitForConnections(connections + 3, 5000);
          proxy.refuse(false);
          fault.note = `${proxy.connectionCount - connections} attempts refused`;
        }
        await wait(5000);
        cut();
        await wait(6500);
        cut();
        await wait(8000);
        cut();
        await wait(9000);
        cut();
      };

      const streamed = stream(pub).finally(() => streaming = false);
      const [rate] = await within(Promise.all([streamed, script()]), 45_000, "the stream");
      await check.reach(N, 10_000);
      assertComplete(check);

      const cuts = faults.filter((f) => f.kind === "cut");
      assert.ok(cuts.filter((f) => f.streaming).length >= 5, "at least 5 cuts during the stream");
      assert.ok(faults.every((f) => f.kind === "cut" || f.streaming), "every fault mid-stream");
      assert.ok(
        pub.log.some((l) => /link is dead: no (PUBACK|PINGRESP)/.test(l)),
        `the half-open link was not detected as dead:\n${pub.log.join("\n")}`,
      );
      assert.equal(pub.inflightCount, 0);
      assert.ok(pub.isConnected());

      console.log(`with faults: ${rate.toFixed(0)} msgs/s, ${check.duplicates} duplicates in all`);
      faults.forEach((fault, i) => {
        const next = faults[i + 1]?.duplicatesBefore ?? check.duplicates;
        const duplicates = next - fault.duplicatesBefore;
        console.log(
          `  ${fault.kind.padEnd(9)} at #${String(fault.at).padEnd(5)}: ${duplicates} duplicates` +
            (fault.note ? ` (${fault.note})` : ""),
        );
      });
      console.log(`  proxy saw ${proxy.connectionCount} connections`);
    }),
  { extraConfig: UNLIMITED_QUEUE },
);

brokerTest(
  "10 000 QoS 1 messages with no fault: none lost, none duplicated, one connection",
  (broker) =>
    // Same path and window as the faulty run; a roomier responseTime so a slow
    // machine cannot fake a dead link.
    withStream(broker, { responseTime: 2 }, async (proxy, check, pub) => {
      const rate = await within(stream(pub), 30_000, "the stream");
      await check.reach(N, 10_000);
      assertComplete(check);
      // Nothing is re-sent on a live connection.
      assert.equal(check.duplicates, 0);
      assert.equal(proxy.connectionCount, 1);
      console.log(`without faults: ${rate.toFixed(0)} msgs/s`);
    }),
  { extraConfig: UNLIMITED_QUEUE },
);

// ---- broker restart -------------------------------------------------------------------

/** Quick redials, so the clients are back soon after the broker is. */
const RESTART_RECONNECT = { initialDelay: 0.05, maxDelay: 0.2 };

/** Received `topic text` lines, with waits. */
class Lines {
  readonly got: string[] = [];
  readonly watch = new Watch();
  readonly handler: MessageHandler = (topic, payload) => {
    this.got.push(`${topic} ${text(payload)}`);
    this.watch.changed();
  };
  has(line: string, ms = 5000): Promise<void> {
    return this.watch.until(
      () => this.got.includes(line),
      ms,
      () => `"${line}" (have ${JSON.stringify(this.got)})`,
    );
  }
}

/** A promise's outcome, readable synchronously. */
function track(promise: Promise<unknown>): { settled: () => string | undefined } {
  let outcome: string | undefined;
  promise.then(
    () => outcome = "resolved",
    (error) => outcome = `rejected: ${error}`,
  );
  return { settled: () => outcome };
}

/** While the broker is down, a fresh client cannot even connect. */
async function assertBrokerDown(broker: { hostname: string; port: number }): Promise<void> {
  const probe = quickClient(broker, { clientId: "probe" });
  const error = await within(
    probe.connect().then(() => undefined, (e) => e),
    5000,
    "connect() to fail while the broker is down",
  );
  await probe.disconnect();
  assert.ok(error instanceof Error && !(error instanceof ConnectionRefusedError), `got ${error}`);
}

brokerTest(
  "broker restart: QoS 1 messages published to a session while its client was away arrive when it comes back",
  async (broker) => {
    // The subscriber reaches the broker through a proxy that refuses it after the
    // restart, so a publisher can fill its persisted session first.
    await using proxy = await proxyTo(broker);
    const clients: TestClient[] = [];
    try {
      const inbox = new Lines();
      const subLinks = new Links();
      const sub = await connected(proxy, clients, {
        clientId: "restart-sub",
        clean: false,
        onMessage: inbox.handler,
        onConnectionChange: subLinks.handler,
        reconnect: RESTART_RECONNECT,
      });
      await sub.subscribe("rs/#", 1);
      const pubLinks = new Links();
      const pub = await connected(broker, clients, {
        clientId: "restart-pub",
        clean: false,
        onConnectionChange: pubLinks.handler,
        reconnect: RESTART_RECONNECT,
      });
      await pub.publish("rs/before", "b", { qos: 1 });
      await inbox.has("rs/before b");

      await broker.stop();
      await subLinks.downs(1);
      await pubLinks.downs(1);
      // While the broker is down a publisher cannot deliver: its calls wait.
      const away = [0, 1, 2].map((i) => pub.publish("rs/away", `a${i}`, { qos: 1 }));
      const outcomes = away.map(track);
      await assertBrokerDown(broker);
      assert.deepEqual(outcomes.map((o) => o.settled()), [undefined, undefined, undefined]);

      proxy.refuse(true); // keeps the subscriber away after the restart
      await broker.restart();
      await within(Promise.all(away), 5000, "the publisher's messages after the restart");
      await pub.publish("rs/after", "x", { qos: 1 });
      assert.equal(sub.isConnected(), false, "the subscriber must still be away");

      proxy.refuse(false);
      await subLinks.ups(2, 5000);
      await inbox.has("rs/after x");
      await pub.publish("rs/live", "l", { qos: 1 });
      await inbox.has("rs/live l");
      assert.deepEqual(inbox.got, [
        "rs/before b",
        "rs/away a0",
        "rs/away a1",
        "rs/away a2",
        "rs/after x",
        "rs/live l",
      ]);
    } finally {
      await closeAll(clients);
    }
  },
  { persistence: true },
);

brokerTest(
  "broker restart: a client's QoS 1 publishes made while the broker is down wait, then complete",
  async (broker) => {
    // The client reaches the broker through a proxy that refuses it after the
    // restart until a watcher has subscribed, so its messages arrive live.
    await using proxy = await proxyTo(broker);
    const clients: TestClient[] = [];
    try {
      const links = new Links();
      const client = await connected(proxy, clients, {
        clientId: "restart-own",
        clean: false,
        onConnectionChange: links.handler,
        reconnect: RESTART_RECONNECT,
      });
      await client.subscribe("own/in", 1); // a session worth persisting

      await broker.stop();
      await links.downs(1);
      const sync = [0, 1, 2].map((i) => client.publish("own/out", `s${i}`, { qos: 1 }));
      const streamed = [3, 4].map((i) =>
        client.publish("own/out", `s${i}`, { qos: 1, sync: i === 4 ? true : false })
      );
      const outcomes = [...sync, ...streamed].map(track);
      await assertBrokerDown(broker);
      assert.deepEqual(outcomes.map((o) => o.settled()), Array(5).fill(undefined));

      proxy.refuse(true);
      await broker.restart();
      const inbox = new Lines();
      const watcher = await connected(broker, clients, {
        clientId: "restart-watch",
        onMessage: inbox.handler,
      });
      await watcher.subscribe("own/#", 1);
      assert.deepEqual(outcomes.map((o) => o.settled()), Array(5).fill(undefined));
      proxy.refuse(false);

      await within(Promise.all([...sync, ...streamed]), 5000, "the publishes after the restart");
      assert.deepEqual(outcomes.map((o) => o.settled()), Array(5).fill("resolved"));
      await inbox.has("own/out s4");
      assert.deepEqual(inbox.got, [
        "own/out s0",
        "own/out s1",
        "own/out s2",
        "own/out s3",
        "own/out s4",
      ]);
      assert.ok(links.up >= 2);
    } finally {
      await closeAll(clients);
    }
  },
  { persistence: true },
);
