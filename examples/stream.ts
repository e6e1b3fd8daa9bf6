/**
 * The original mqtt_async test bench: publish N QoS 1 messages, first with
 * `sync: true` (each call waits for its PUBACK), then streaming with
 * `sync: false` (each call returns once the message is written and the
 * in-flight window has room; the last one is `sync: true`, so when it
 * resolves the broker has all N, in order). Prints msgs/s for each.
 *
 *     deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/stream.ts
 *     deno run --allow-net --allow-sys=hostname examples/stream.ts -n 50000 --server broker.local
 *
 * Flags: `-n count` (default 10000), `-s payload bytes` (default 64),
 * `--inflight window` (default 16), `--server host[:port]`.
 *
 * Without `--server` the broker runs in this same process, so the figures
 * include the broker's own work; they are a rough indication, not a benchmark
 * (see `deno task bench` for that).
 *
 * @module
 */

import { MQTTClient } from "../mod.ts";
import { brokerFor, describe, errorText, intFlag, parseFlags } from "./_args.ts";

const USAGE =
  "usage: deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/stream.ts [-n count] [-s bytes] [--inflight window] [--server host[:port]]";
const TOPIC = "test/stream";

const flags = parseFlags(Deno.args, { values: ["-n", "-s", "--inflight", "--server"] }, USAGE);
const count = intFlag(flags, "-n", 10_000, 1, 10_000_000, USAGE);
const size = intFlag(flags, "-s", 64, 0, 1_000_000, USAGE);
const inflight = intFlag(flags, "--inflight", 16, 1, 65_535, USAGE);
await using broker = await brokerFor(flags.get("--server"), USAGE);
console.log(`connecting to the ${describe(broker)}`);

const client = new MQTTClient({
  server: broker.hostname,
  port: broker.port,
  maxInflight: inflight,
});
const payload = new Uint8Array(size).fill(0x2e); // "....."

/** Publishes `count` messages; all but the last with `sync`, the last always sync. */
async function run(sync: boolean): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const last = i === count - 1;
    await client.publish(TOPIC, payload, { qos: 1, sync: sync || last });
  }
  const seconds = (performance.now() - start) / 1000;
  const rate = Math.round(count / seconds);
  console.log(
    `sync: ${sync}: ${count} QoS 1 messages of ${size} bytes in ${
      seconds.toFixed(3)
    } s: ${rate} msgs/s`,
  );
}

try {
  await client.connect({ signal: AbortSignal.timeout(10_000) });
  await run(true);
  await run(false);
} catch (error) {
  console.error(`stream failed: ${errorText(error)}`);
  Deno.exitCode = 1;
} finally {
  await client.disconnect();
}
