/**
 * Shared subscriptions against a private mosquitto 2, in MQTT 3.1.1 and 5:
 * two workers subscribe `$share/g/jobs/#`; every message a publisher sends
 * reaches exactly one of them, on its plain topic, and matches handlers
 * registered with either form of the filter (`on()`, `messages()`); after
 * one worker unsubscribes the shared filter, the other gets everything.
 * Malformed shared filters are TypeErrors and nothing reaches the wire.
 *
 * Skipped without mosquitto; failing instead with MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import type { Message } from "../mod.ts";
import { closeAll, connected, proxyTo, type TestClient, text, Watch, within } from "./helpers.ts";
import { brokerTest } from "./mosquitto.ts";

const N = 200;
const SHARED = "$share/g/jobs/#";

/** What one worker saw, by path: onMessage, on(shared), on(plain), messages(shared). */
class Worker {
  readonly viaOnMessage: string[] = [];
  readonly viaOnShared: string[] = [];
  readonly viaOnPlain: string[] = [];
  readonly viaIterator: string[] = [];
  readonly fences = new Set<string>();
  readonly topics = new Set<string>();
  readonly watch = new Watch();
  client!: TestClient;

  readonly onMessage = (topic: string, payload: Uint8Array): void => {
    if (topic === "fence") this.fences.add(text(payload));
    else {
      this.viaOnMessage.push(text(payload));
      this.topics.add(topic);
    }
    this.watch.changed();
  };

  record(into: string[]): (m: Message) => void {
    return (m) => {
      into.push(text(m.payload));
      this.watch.changed();
    };
  }
}

for (const version of [4, 5] as const) {
  brokerTest(
    `v${version}: $share/g/jobs/# spreads messages over two workers, each to exactly one`,
    async (broker) => {
      const clients: TestClient[] = [];
      const stop = new AbortController();
      try {
        const workers = [new Worker(), new Worker()];
        const loops: Promise<void>[] = [];
        for (const [i, w] of workers.entries()) {
          w.client = await connected(broker, clients, {
            clientId: `worker-${i}-v${version}`,
            protocolVersion: version,
            onMessage: w.onMessage,
          });
          w.client.on(SHARED, w.record(w.viaOnShared));
          w.client.on("jobs/#", w.record(w.viaOnPlain));
          const iterator = w.client.messages(SHARED, { signal: stop.signal });
          loops.push((async () => {
            try {
              for await (const m of iterator) {
                w.viaIterator.push(text(m.payload));
                w.watch.changed();
              }
            } catch (error) {
              if (!stop.signal.aborted) throw error;
            }
          })());
          await w.client.subscribe(SHARED, 1);
          await w.client.subscribe("fence", 1);
        }
        const publisher = await connected(broker, clients, {
          clientId: `producer-v${version}`,
          protocolVersion: version,
        });

        const round = async (tag: string, count: number): Promise<string[]> => {
          const sent: string[] = [];
          const calls = [];
          for (let i = 0; i < count; i++) {
            const body = `${tag}-${i}`;
            sent.push(body);
            calls.push(publisher.publish(`jobs/${i % 4}/run`, body, { qos: 1, sync: false }));
          }
          await Promise.all(calls);
          // A fence on a plain subscription of both: once both have it, everything before is in.
          await publisher.publish("fence", tag, { qos: 1 });
          for (const w of workers) {
            await w.watch.until(() => w.fences.has(tag), 5000, () => `fence ${tag}`);
          }
          return sent;
        };

        const sent = await round("r1", N);
        const all = workers.flatMap((w) => w.viaOnMessage);
        assert.equal(all.length, N, `${all.length} deliveries for ${N} messages`);
        assert.deepEqual([...all].sort(), [...sent].sort(), "each message to exactly one worker");
        for (const [i, w] of workers.entries()) {
          assert.ok(w.viaOnMessage.length > 0, `worker ${i} got no message: nothing was shared`);
          for (const topic of w.topics) assert.match(topic, /^jobs\/\d\/run$/, "the plain topic");
          // Both forms of the filter match what arrived through the shared subscription.
          assert.deepEqual(w.viaOnShared, w.viaOnMessage, `worker ${i}: on("${SHARED}")`);
          assert.deepEqual(w.viaOnPlain, w.viaOnMessage, `worker ${i}: on("jobs/#")`);
          await w.watch.until(
            () => w.viaIterator.length >= w.viaOnMessage.length,
            5000,
            () => `worker ${i}: messages("${SHARED}") to catch up`,
          );
          assert.deepEqual(w.viaIterator, w.viaOnMessage, `worker ${i}: messages("${SHARED}")`);
        }

        // The shared filter unsubscribes like any other: the remaining worker gets everything.
        await workers[1].client.unsubscribe(SHARED);
        const before = workers.map((w) => w.viaOnMessage.length);
        const second = await round("r2", 50);
        assert.equal(workers[1].viaOnMessage.length, before[1], "the worker that left got more");
        assert.deepEqual(workers[0].viaOnMessage.slice(before[0]).sort(), second.sort());
        stop.abort();
        await within(Promise.all(loops), 2000, "the iterators to end");
      } finally {
        stop.abort();
        await closeAll(clients);
      }
    },
  );
}

brokerTest(
  "malformed shared filters are TypeErrors and nothing is sent",
  async (broker) => {
    const proxy = await proxyTo(broker);
    const clients: TestClient[] = [];
    try {
      const client = await connected(proxy, clients, { clientId: "shared-validation" });
      await client.subscribe(SHARED, 1); // a well-formed one passes, on the same connection
      const framesBefore = proxy.frames.length;
      const cases: [string, RegExp][] = [
        ["$share//x", /empty shared subscription group/],
        ["$share/g+/x", /wildcards in its shared subscription group/],
        ["$share/g#/x", /wildcards in its shared subscription group/],
        ["$share/g", /shared subscription without a filter/],
        ["$share/g/", /must not be empty|without a filter/],
      ];
      for (const [filter, message] of cases) {
        await assert.rejects(client.subscribe(filter, 1), (e: Error) => {
          assert.ok(e instanceof TypeError, `subscribe("${filter}"): ${e}`);
          assert.match(e.message, message);
          return true;
        });
        await assert.rejects(client.unsubscribe(filter), TypeError, `unsubscribe("${filter}")`);
        assert.throws(() => client.on(filter, () => {}), TypeError, `on("${filter}")`);
        assert.throws(() => client.messages(filter), TypeError, `messages("${filter}")`);
      }
      // A round trip after the refused calls: any frame they made is on the wire before it ends.
      await client.publish("probe", "x", { qos: 1 });
      const sent = proxy.frames.slice(framesBefore).filter((f) => f.direction === "toBroker");
      assert.deepEqual(sent.map((f) => f.type), [3], "only the probe PUBLISH reached the wire");
      assert.ok(client.isConnected());
    } finally {
      await closeAll(clients);
      await proxy.close();
    }
  },
);
