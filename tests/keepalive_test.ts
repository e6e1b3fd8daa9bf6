/**
 * Keepalive against a real mosquitto over several intervals: an idle client
 * with a short keepalive (and the default 10 s responseTime) must speak at
 * least once per keepalive, or the broker drops it after 1.5 × keepalive
 * (MQTT-3.1.2-24). What the broker sends does not count as the client
 * speaking (MQTT-3.1.2-23), so the same holds while QoS 0 messages stream in.
 *
 * The frames are watched on the wire by a proxy between client and broker.
 */

import assert from "node:assert/strict";
import type { FaultProxy } from "./fault_proxy.ts";
import { closeAll, connected, Links, proxyTo, type TestClient } from "./helpers.ts";
import { brokerTest, type Mosquitto } from "./mosquitto.ts";

const PINGREQ = 12;
const PINGRESP = 13;
/** Timers, the proxy and the broker each add a little; a late ping is still far from 1.5 × keepalive. */
const SLACK_MS = 250;
const IDLE_MS = 8_500; // ≥ 4 intervals of the 2 s keepalive, 8 of the 1 s one

interface Watched {
  keepalive: number;
  proxy: FaultProxy;
  links: Links;
  client: TestClient;
}

async function idleClient(
  broker: Mosquitto,
  keepalive: number,
  clients: TestClient[],
  proxies: FaultProxy[],
): Promise<Watched> {
  const proxy = await proxyTo(broker);
  proxies.push(proxy);
  const links = new Links();
  const client = await connected(proxy, clients, {
    clientId: `idle-k${keepalive}`,
    keepalive,
    responseTime: 10,
    onConnectionChange: links.handler,
  });
  return { keepalive, proxy, links, client };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The client spoke at least once per keepalive and every PINGREQ was answered; nothing dropped. */
function assertKeptAlive(w: Watched, since: number, until: number): void {
  const label = `keepalive ${w.keepalive} s`;
  assert.equal(w.links.down, 0, `${label}: the connection was lost`);
  assert.equal(w.proxy.connectionCount, 1, `${label}: the client reconnected`);
  const fromClient = w.proxy.frames.filter((f) => f.direction === "toBroker" && f.at >= since);
  const limit = w.keepalive * 1000 + SLACK_MS;
  let last = since;
  for (const frame of [...fromClient, { at: until }]) {
    assert.ok(
      frame.at - last <= limit,
      `${label}: the client was silent for ${Math.round(frame.at - last)} ms (limit ${limit} ms)`,
    );
    last = frame.at;
  }
  const pings = fromClient.filter((f) => f.type === PINGREQ).length;
  const intervals = Math.floor((until - since) / (w.keepalive * 1000));
  assert.ok(pings >= intervals - 1, `${label}: ${pings} PINGREQs in ${intervals} intervals`);
  const answers = w.proxy.frames.filter((f) => f.direction === "toClient" && f.type === PINGRESP);
  assert.ok(answers.length >= pings - 1, `${label}: ${answers.length} PINGRESPs for ${pings}`);
}

brokerTest(
  "an idle client pings every keepalive (1 s and 2 s) and is never dropped",
  async (broker) => {
    const clients: TestClient[] = [];
    const proxies: FaultProxy[] = [];
    try {
      const watched = [
        await idleClient(broker, 1, clients, proxies),
        await idleClient(broker, 2, clients, proxies),
      ];
      const since = performance.now();
      await sleep(IDLE_MS); // the behaviour under test is what happens over time
      const until = performance.now();
      for (const w of watched) assertKeptAlive(w, since, until);
      assert.doesNotMatch(await broker.log(), /exceeded timeout/);
    } finally {
      await closeAll(clients);
      for (const proxy of proxies) await proxy.close();
    }
  },
);

brokerTest(
  "a client receiving QoS 0 messages still pings every keepalive: the broker's traffic does not count",
  async (broker) => {
    const clients: TestClient[] = [];
    const proxies: FaultProxy[] = [];
    let publishing = true;
    let publisher: Promise<void> | undefined;
    try {
      const watched = [
        await idleClient(broker, 1, clients, proxies),
        await idleClient(broker, 2, clients, proxies),
      ];
      const received = [0, 0];
      watched.forEach((w, i) => w.client.on("feed/#", () => void received[i]++));
      for (const w of watched) await w.client.subscribe("feed/#", 0);
      const source = await connected(broker, clients, { clientId: "feed-source" });
      publisher = (async () => {
        for (let i = 0; publishing; i++) {
          await source.publish(`feed/${i % 4}`, `tick ${i}`, { qos: 0 });
          await sleep(100);
        }
      })();
      const since = performance.now();
      await sleep(IDLE_MS);
      const until = performance.now();
      publishing = false;
      await publisher;
      for (const w of watched) assertKeptAlive(w, since, until);
      for (const count of received) assert.ok(count >= 40, `only ${count} messages arrived`);
      assert.doesNotMatch(await broker.log(), /exceeded timeout/);
    } finally {
      publishing = false;
      await publisher;
      await closeAll(clients);
      for (const proxy of proxies) await proxy.close();
    }
  },
);
