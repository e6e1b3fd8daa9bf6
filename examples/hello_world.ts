/**
 * Hello world, as in the original mqtt_async: subscribe in `onConnect` (so a
 * reconnect that lost the session subscribes again), publish a few QoS 1
 * messages, print what goes out and what comes back, disconnect.
 *
 * Run it against a broker started in this process (no setup needed):
 *
 *     deno task demo
 *     deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/hello_world.ts
 *
 * or against your own broker (widen --allow-net to its host):
 *
 *     deno run --allow-net --allow-sys=hostname examples/hello_world.ts --server broker.local:1883
 *
 * Prints "publish 0" ... "publish 4" and, for each message received, its
 * topic, payload, retained flag and QoS; exits 0 once all 5 came back.
 *
 * @module
 */

import { MQTTClient } from "../mod.ts";
import { brokerFor, describe, errorText, intFlag, parseFlags, within } from "./_args.ts";

const USAGE =
  "usage: deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/hello_world.ts [--server host[:port]] [-n count]";
const TOPIC = "test/mqtt_async";

const flags = parseFlags(Deno.args, { values: ["--server", "-n"] }, USAGE);
const count = intFlag(flags, "-n", 5, 1, 1000, USAGE);
await using broker = await brokerFor(flags.get("--server"), USAGE);
console.log(`connecting to the ${describe(broker)}`);

const decoder = new TextDecoder();
let received = 0;
let allReceived!: () => void;
const done = new Promise<void>((resolve) => allReceived = resolve);

const client = new MQTTClient({
  server: broker.hostname,
  port: broker.port,
  // A message: topic, payload, retained flag and QoS, as the seed's callback printed them.
  onMessage: (topic, payload, retained, qos) => {
    console.log(`received ${topic} ${decoder.decode(payload)} retained=${retained} qos=${qos}`);
    if (++received === count) allReceived();
  },
  // Runs after every successful connection, before connect() resolves the first time.
  onConnect: async (client) => {
    await client.subscribe(TOPIC, 1);
  },
});

try {
  await client.connect({ signal: AbortSignal.timeout(10_000) });
  for (let n = 0; n < count; n++) {
    console.log("publish", n);
    // If the network is down, this waits for the reconnect instead of failing.
    await client.publish(TOPIC, `Hello World #${n}!`, { qos: 1 });
  }
  await within(done, 10_000, `${count} messages to come back`);
  console.log(`all ${count} messages came back`);
} catch (error) {
  console.error(`hello_world failed: ${errorText(error)}`);
  Deno.exitCode = 1;
} finally {
  await client.disconnect();
}
