/**
 * The default clientId: random, never derived from the host, so two
 * programs on one host (and two clients in one program) that leave it out
 * do not take each other's connection at the broker. A persistent session
 * is found again by its client id, so `clean: false`, a store or an MQTT 5
 * `sessionExpiry` without an explicit one is a TypeError saying why.
 *
 * The on-the-wire part (two default clients connected to one mosquitto at
 * once, neither kicked) skips without mosquitto; it fails instead with
 * MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import { FileStore, MemoryStore, MQTTClient } from "../mod.ts";
import type { MQTTClientOptions } from "../options.ts";
import { captureLogger, closeAll, Links, proxyTo, type TestClient, within } from "./helpers.ts";
import { brokerTest } from "./mosquitto.ts";

/** Characters every broker must accept in a client id (MQTT-3.1.3-5), at most 23 of them. */
const PORTABLE_ID = /^[0-9a-zA-Z]{1,23}$/;

const base: MQTTClientOptions = { server: "127.0.0.1", logger: captureLogger() };

Deno.test("the default clientId is random: two clients in one process differ, and it is portable", () => {
  const ids = new Set<string>();
  for (let i = 0; i < 50; i++) ids.add(new MQTTClient(base).clientId);
  assert.equal(ids.size, 50, "default clientIds repeat within one process");
  for (const id of ids) assert.match(id, PORTABLE_ID);
  const host = Deno.hostname();
  for (const id of ids) assert.ok(!id.includes(host), `the id ${id} carries the host name`);
  // An explicit one is kept as given.
  assert.equal(new MQTTClient({ ...base, clientId: "sensor-7" }).clientId, "sensor-7");
});

Deno.test("the default clientId differs between two processes on one host", async () => {
  const script = `import { MQTTClient, silentLogger } from ${
    JSON.stringify(
      new URL("../mod.ts", import.meta.url).href,
    )
  };
console.log(new MQTTClient({ server: "127.0.0.1", logger: silentLogger }).clientId);`;
  const run = async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout).trim();
  };
  const [one, two] = await Promise.all([run(), run()]);
  assert.match(one, PORTABLE_ID);
  assert.match(two, PORTABLE_ID);
  assert.notEqual(one, two, "two programs on one host got the same default clientId");
});

Deno.test("a persistent session without an explicit clientId is a TypeError saying why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt_async_client_id_" });
  try {
    const cases: [string, Partial<MQTTClientOptions>, RegExp][] = [
      ["clean: false", { clean: false }, /clientId is required with clean: false/],
      ["a FileStore", { store: new FileStore(dir) }, /clientId is required with a session store/],
      ["a MemoryStore", { store: new MemoryStore() }, /clientId is required with a session store/],
      [
        "v5 sessionExpiry",
        { protocolVersion: 5, sessionExpiry: 600 },
        /clientId is required with sessionExpiry/,
      ],
      [
        "v5 sessionExpiry 0 and clean: false",
        { protocolVersion: 5, sessionExpiry: 0, clean: false },
        /clientId is required with clean: false/,
      ],
    ];
    for (const [name, options, message] of cases) {
      assert.throws(
        () => new MQTTClient({ ...base, ...options }),
        (error: Error) => {
          assert.ok(error instanceof TypeError, `${name}: expected a TypeError, got ${error}`);
          assert.match(error.message, message, name);
          assert.match(error.message, /persistent session/, `${name}: the reason is named`);
          assert.match(error.message, /random/, `${name}: the default is named`);
          return true;
        },
      );
      // With an explicit id the same options are fine.
      new MQTTClient({ ...base, ...options, clientId: "stable-id" });
    }
    // Nothing persistent: the random default is fine, for 3.1.1 and 5.
    new MQTTClient({ ...base, clean: true });
    new MQTTClient({ ...base, protocolVersion: 5 });
    // Nothing was written for the refused client.
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

brokerTest(
  "two clients with the default clientId share one mosquitto without taking each other's connection",
  async (broker) => {
    const proxy = await proxyTo(broker);
    const clients: TestClient[] = [];
    try {
      const links = [new Links(), new Links()];
      for (const l of links) {
        const logger = captureLogger();
        const client = new MQTTClient({
          server: proxy.hostname,
          port: proxy.port,
          responseTime: 1,
          reconnect: { initialDelay: 0.02, maxDelay: 0.2 },
          logger,
          onConnectionChange: l.handler,
        });
        clients.push(Object.assign(client, { log: logger.lines }));
        await within(client.connect(), 5000, "connect()");
      }
      const dialed = proxy.connectionCount; // the clean-session dance dials twice each
      // A round trip on each after both connected: a takeover would have dropped the first.
      for (const client of clients) {
        await client.subscribe(`own/${client.clientId}`, 1);
        await within(client.publish(`own/${client.clientId}`, "x", { qos: 1 }), 5000, "publish");
      }
      assert.deepEqual(links.map((l) => l.down), [0, 0], "a client lost its connection");
      assert.equal(proxy.connectionCount, dialed, "a client had to reconnect");
      const log = await broker.log();
      for (const client of clients) {
        assert.match(log, new RegExp(` as ${client.clientId} `), "the broker saw the random id");
      }
      assert.doesNotMatch(log, /already connected, closing old connection/);
    } finally {
      await closeAll(clients);
      await proxy.close();
    }
  },
);
