/**
 * A tiny mosquitto_sub: subscribe to one or more topic filters and print
 * every message, until `-C count` messages arrived or Ctrl-C.
 *
 *     deno run --allow-net --allow-sys=hostname examples/sub.ts \
 *       -h broker.local -t 'sensors/#' -t 'cmd/+' -q 1 -v
 *     # TLS (add --allow-read for the files):
 *     deno run --allow-net --allow-sys=hostname --allow-read examples/sub.ts \
 *       -h broker.local --cafile ca.pem -t 'sensors/#'
 *
 * Without `-h` it starts a plain broker in this process (127.0.0.1, free
 * port) and, since nobody else would publish there, publishes sample
 * messages to itself, one per filter or `-C count` of them, then exits
 * (default filter `test/#`):
 *
 *     deno run --allow-net=127.0.0.1 --allow-sys=hostname examples/sub.ts -v
 *
 * Flags: `-h host`, `-p port` (default 1883, 8883 with TLS), `-t filter`
 * (repeatable), `-q 0|1` (subscription QoS), `-v` (print "topic payload"),
 * `-C count`, `-u user`, `-P password`, `-i clientId`, `--cafile file`,
 * `--cert file`, `--key file`, `--tls-use-os-certs` (TLS against the
 * system's CAs only), `-d` (debug log), `--help`. Exits 0 after
 * `-C` messages or Ctrl-C, 1 if it cannot connect or the broker refuses a
 * subscription, 2 on a usage error.
 *
 * @module
 */

import { MQTTClient } from "../mod.ts";
import {
  brokerFor,
  describe,
  errorText,
  intFlag,
  MOSQUITTO_BOOLEANS,
  MOSQUITTO_VALUES,
  mosquittoOptions,
  parseFlags,
  qosFlag,
  usageError,
} from "./_args.ts";

const USAGE = "usage: deno run --allow-net --allow-sys=hostname examples/sub.ts " +
  "[-h host [-p port] [--cafile file] [--cert file --key file] [--tls-use-os-certs]] -t filter [-t filter ...] " +
  "[-q 0|1] [-v] [-C count] [-u user [-P password]] [-i clientId] [-d] [--help]";

const flags = parseFlags(
  Deno.args,
  {
    values: [...MOSQUITTO_VALUES, "-C"],
    repeatable: ["-t"],
    booleans: [...MOSQUITTO_BOOLEANS, "-v"],
  },
  USAGE,
);
const { hostname, options } = mosquittoOptions(flags, USAGE, `deno-sub-${Deno.pid}`);
const embedded = hostname === undefined;
let filters = flags.all("-t");
if (filters.length === 0) {
  if (!embedded) usageError("-t filter is required", USAGE);
  filters = ["test/#"];
}
const qos = qosFlag(flags, USAGE);
const verbose = flags.has("-v");
const limit = intFlag(flags, "-C", embedded ? filters.length : Infinity, 1, 1_000_000_000, USAGE);

await using broker = embedded ? await brokerFor(undefined, USAGE) : undefined;
const stop = new AbortController(); // ends the message loop: Ctrl-C or a refused subscription
let refused: unknown;
const onSigint = () => stop.abort();
Deno.addSignalListener("SIGINT", onSigint);

let client: MQTTClient;
try {
  client = new MQTTClient({
    ...options,
    server: broker?.hostname ?? hostname!,
    port: broker?.port ?? options.port,
    // Subscribe on every connection: a broker that lost the session gets them again.
    onConnect: async (client) => {
      for (const filter of filters) {
        try {
          await client.subscribe(filter, qos);
        } catch (error) {
          refused = error;
          stop.abort();
          return;
        }
      }
    },
  });
} catch (error) {
  usageError(errorText(error), USAGE); // a bad option or filter
}

// Registered before connecting, so retained messages sent right after SUBACK are not missed.
const messages = client.messages(undefined, { signal: stop.signal });
const decoder = new TextDecoder();
try {
  await client.connect({ signal: AbortSignal.timeout(10_000) }); // onConnect has run
  if (refused !== undefined) throw refused;
  if (broker) {
    console.log(
      `no -h given: using an ${describe(broker)}; nobody else publishes there, ` +
        `so publishing ${limit} sample message(s) to myself`,
    );
    for (let i = 0; i < limit && !stop.signal.aborted; i++) {
      const topic = sampleTopic(filters[i % filters.length]);
      await client.publish(topic, `sample message ${i + 1} from sub.ts`, { qos });
    }
  }
  let count = 0;
  for await (const { topic, payload } of messages) {
    const text = decoder.decode(payload);
    console.log(verbose ? `${topic} ${text}` : text);
    if (++count >= limit) break;
  }
  if (refused !== undefined) throw refused;
} catch (error) {
  console.error(`sub failed: ${errorText(error)}`);
  Deno.exitCode = 1;
} finally {
  Deno.removeSignalListener("SIGINT", onSigint);
  await client.disconnect();
}

/** A topic name matching `filter`: each wildcard level becomes "sample". */
function sampleTopic(filter: string): string {
  return filter.split("/").map((level) => level === "+" || level === "#" ? "sample" : level)
    .join("/");
}
