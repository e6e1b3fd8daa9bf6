/**
 * Session loss on the wire: a private mosquitto without persistence is
 * restarted under a client (clean: false, explicit clientId) that holds
 * subscriptions at QoS 1 and 2 and has dropped a third. The broker comes
 * back with no session (sessionPresent=0), and the client:
 *
 * - subscribes again to exactly what it holds, at the QoS it asked for (the
 *   broker's log, `log_type all`, lists the filters of every SUBSCRIBE);
 * - sends those SUBSCRIBEs before re-sending its un-ACKed publishes (the
 *   proxy's frame tap shows the order; and a re-sent publish to one of its
 *   own filters comes back to it, which it would not if it went first);
 * - gets messages published afterwards without the test subscribing again,
 *   not those of the filter it unsubscribed;
 * - runs onConnect (with sessionPresent false).
 *
 * For MQTT 3.1.1 and 5. Skipped without mosquitto; failing instead with
 * MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import {
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
import { brokerTest } from "./mosquitto.ts";

const CONNECT = 1;
const PUBLISH = 3;
const SUBSCRIBE = 8;
const UNSUBSCRIBE = 10;

for (const version of [4, 5] as const) {
  brokerTest(
    `v${version}: after a broker restart without persistence the client subscribes again, before re-sending`,
    async (broker) => {
      const proxy = await proxyTo(broker);
      const clients: TestClient[] = [];
      try {
        const got: { topic: string; text: string; qos: number }[] = [];
        const inbox = new Watch();
        const presence: boolean[] = [];
        const links = new Links();
        const id = `session-loss-v${version}`;
        const client = await connected(proxy, clients, {
          clientId: id,
          clean: false,
          protocolVersion: version,
          onMessage: (topic, payload, _retained, qos) => {
            got.push({ topic, text: text(payload), qos });
            inbox.changed();
          },
          onConnect: (_c, sessionPresent) => {
            presence.push(sessionPresent);
          },
          onConnectionChange: links.handler,
        });
        const has = (topic: string, body: string, ms = 5000) =>
          inbox.until(
            () => got.some((m) => m.topic === topic && m.text === body),
            ms,
            () => `"${body}" on ${topic}; got ${JSON.stringify(got)}`,
          );
        await client.subscribe("one/#", 1);
        await client.subscribe("two/#", 2);
        await client.subscribe("gone/#", 1);
        await client.unsubscribe("gone/#");
        // MQTT 5: options come back with the subscription (noLocal: its own publishes stay away).
        if (version === 5) await client.subscribe("own/#", { qos: 1, noLocal: true });
        assert.equal(proxy.frames.filter((f) => f.type === UNSUBSCRIBE).length, 1);

        const publisher = await connected(broker, clients, {
          clientId: `publisher-v${version}`,
          protocolVersion: version,
        });
        await publisher.publish("one/before", "b1", { qos: 1 });
        await has("one/before", "b1");

        // Publishes the broker will never see: the link is frozen, then the broker restarts.
        proxy.blackhole(true);
        const framesBefore = proxy.frames.length;
        const pending = [
          client.publish("one/self", "resent-1", { qos: 1 }),
          client.publish("two/self", "resent-2", { qos: 2 }),
        ];
        await until(
          () =>
            proxy.frames.slice(framesBefore).filter((f) =>
              f.type === PUBLISH && f.direction === "toBroker"
            ).length === 2,
          5000,
          "the two PUBLISHes to reach the proxy",
        );
        const logBefore = (await broker.log()).length;
        await broker.restart(); // persistence off: every session is gone
        proxy.cutAll();
        proxy.blackhole(false);

        await links.ups(2, 10_000);
        await within(Promise.all(pending), 5000, "the re-sent publishes to be acknowledged");
        assert.deepEqual(
          presence,
          [false, false],
          "onConnect ran again, with sessionPresent false",
        );

        // On the wire: after the new CONNECT, every SUBSCRIBE before the first PUBLISH.
        const lastConnect = proxy.frames.findLastIndex((f) =>
          f.type === CONNECT && f.direction === "toBroker"
        );
        const after = proxy.frames.slice(lastConnect).filter((f) => f.direction === "toBroker");
        const types = after.map((f) => f.type);
        const firstPublish = types.indexOf(PUBLISH);
        assert.ok(firstPublish > 0, `no PUBLISH re-sent: ${types}`);
        assert.ok(types.includes(SUBSCRIBE), `no SUBSCRIBE after the restart: ${types}`);
        assert.ok(
          types.lastIndexOf(SUBSCRIBE) < firstPublish,
          `a PUBLISH went before a SUBSCRIBE: ${types}`,
        );
        assert.ok(!types.includes(UNSUBSCRIBE), `an UNSUBSCRIBE after the restart: ${types}`);

        // What the new broker was asked for: the two held filters at their QoS, not the dropped one.
        const log = (await broker.log()).slice(logBefore);
        const subscribed = [...log.matchAll(/^\S+: \t(\S+) \(QoS (\d)\)$/gm)].map((m) =>
          `${m[1]} ${m[2]}`
        );
        assert.deepEqual(
          subscribed.sort(),
          version === 5 ? ["one/# 1", "own/# 1", "two/# 2"] : ["one/# 1", "two/# 2"],
          `filters subscribed after the restart, from the broker's log:\n${log}`,
        );

        // The re-sent publishes came back to the client: its subscriptions were there first.
        await has("one/self", "resent-1");
        await has("two/self", "resent-2");
        assert.equal(got.find((m) => m.text === "resent-2")?.qos, 2, "two/# is held at QoS 2");

        // Messages published afterwards arrive, at the subscription's QoS; "gone/#" stays gone.
        await publisher.publish("gone/x", "must-not-arrive", { qos: 1 });
        await publisher.publish("two/after", "a2", { qos: 2 });
        await publisher.publish("one/after", "a1", { qos: 2 });
        await has("one/after", "a1");
        await has("two/after", "a2");
        assert.equal(got.find((m) => m.text === "a1")?.qos, 1, "one/# is held at QoS 1");
        assert.equal(got.find((m) => m.text === "a2")?.qos, 2);
        assert.ok(
          !got.some((m) => m.topic.startsWith("gone/")),
          `a message of the unsubscribed filter arrived: ${JSON.stringify(got)}`,
        );
        if (version === 5) {
          // noLocal held: the client's own publish does not come back; the one after it does.
          await client.publish("own/x", "from-myself", { qos: 1 });
          await publisher.publish("own/x", "from-publisher", { qos: 1 });
          await has("own/x", "from-publisher");
          assert.ok(
            !got.some((m) => m.text === "from-myself"),
            "noLocal was lost in the re-subscription",
          );
        }
        assert.match(client.log.join("\n"), /no session for this client: subscriptions made again/);
      } finally {
        await closeAll(clients);
        await proxy.close();
      }
    },
    { extraConfig: "log_type all" },
  );
}
