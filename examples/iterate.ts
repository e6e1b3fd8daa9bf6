/**
 * Consuming messages with `for await`: `client.messages("sensors/#")` is an
 * async iterator of the messages matching the filter. A QoS 1 message is
 * acknowledged only once the loop has pulled it, and `break` unregisters the
 * iterator. The same program plays the sensors, publishing N readings, and
 * both the client and the broker are closed by `await using`.
 *
 *     deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/iterate.ts
 *     deno run --allow-net --allow-sys=hostname examples/iterate.ts -n 100 --server broker.local
 *
 * Flags: `-n count` (default 10), `--server host[:port]` (default: a broker
 * started in this process on 127.0.0.1).
 *
 * @module
 */

import { MQTTClient } from "../mod.ts";
import { brokerFor, describe, intFlag, parseFlags } from "./_args.ts";

const USAGE =
  "usage: deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/iterate.ts [-n count] [--server host[:port]]";

const flags = parseFlags(Deno.args, { values: ["-n", "--server"] }, USAGE);
const count = intFlag(flags, "-n", 10, 1, 1_000_000, USAGE);
await using broker = await brokerFor(flags.get("--server"), USAGE);
console.log(`connecting to the ${describe(broker)}`);

// Disposed (disconnected) before the broker: `await using` unwinds in reverse order.
await using client = new MQTTClient({ server: broker.hostname, port: broker.port });
await client.connect({ signal: AbortSignal.timeout(10_000) });
await client.subscribe("sensors/#", 1);

// Create the iterator before anything is published, so no message is missed. The signal
// ends the loop if the readings stop coming.
const readings = client.messages("sensors/#", { signal: AbortSignal.timeout(30_000) });

const rooms = ["kitchen", "hall", "garage"];
const producer = (async () => {
  for (let i = 0; i < count; i++) {
    const room = rooms[i % rooms.length];
    const celsius = (19 + (i * 7 % 50) / 10).toFixed(1);
    await client.publish(`sensors/${room}/temp`, celsius, { qos: 1, sync: false });
  }
})();

const decoder = new TextDecoder();
let n = 0;
for await (const { topic, payload, qos } of readings) {
  n++;
  console.log(`${n}/${count} ${topic} = ${decoder.decode(payload)} (qos ${qos})`);
  if (n === count) break; // ends the iterator; later messages are no longer buffered
}
await producer;
if (n === count) {
  console.log(`got all ${count} readings`);
} else {
  console.error(`only ${n} of ${count} readings arrived within 30 s`);
  Deno.exitCode = 1;
}
