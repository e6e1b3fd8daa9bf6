/**
 * A tiny mosquitto_pub: connect, publish one message, disconnect.
 *
 *     deno run --allow-net --allow-sys=hostname examples/pub.ts \
 *       -h broker.local -t sensors/kitchen/temp -m 21.5 -q 1 -r
 *     # TLS (add --allow-read for the files):
 *     deno run --allow-net --allow-sys=hostname --allow-read examples/pub.ts \
 *       -h broker.local --cafile ca.pem --cert client.pem --key client.key -t t -m hi
 *
 * Without `-h` there is no broker to talk to, so it starts a plain broker in
 * this process (127.0.0.1, free port), subscribes to the topic itself and
 * shows the message's round trip (defaults: `-t test/pub -m "hello from
 * pub.ts"`):
 *
 *     deno run --allow-net=127.0.0.1 --allow-sys=hostname examples/pub.ts -q 1
 *
 * Flags: `-h host`, `-p port` (default 1883, 8883 with TLS), `-t topic`,
 * `-m message`, `-q 0|1`, `-r` (retain), `-u user`, `-P password`,
 * `-i clientId`, `--cafile file`, `--cert file`, `--key file`,
 * `--tls-use-os-certs` (TLS against the system's CAs only), `-d` (debug
 * log), `--help`. Exits 0 once the broker has the message (QoS 1: PUBACK
 * received; QoS 0: written), 1 if it cannot connect, 2 on a usage error.
 *
 * @module
 */

import { MQTTClient } from "../mod.ts";
import {
  brokerFor,
  describe,
  errorText,
  MOSQUITTO_BOOLEANS,
  MOSQUITTO_VALUES,
  mosquittoOptions,
  parseFlags,
  qosFlag,
  usageError,
  within,
} from "./_args.ts";

const USAGE = "usage: deno run --allow-net --allow-sys=hostname examples/pub.ts " +
  "[-h host [-p port] [--cafile file] [--cert file --key file] [--tls-use-os-certs]] -t topic -m message " +
  "[-q 0|1] [-r] [-u user [-P password]] [-i clientId] [-d] [--help]";

const flags = parseFlags(
  Deno.args,
  { values: [...MOSQUITTO_VALUES, "-t", "-m"], booleans: [...MOSQUITTO_BOOLEANS, "-r"] },
  USAGE,
);
const { hostname, options } = mosquittoOptions(flags, USAGE, `deno-pub-${Deno.pid}`);
const embedded = hostname === undefined;
const topic = flags.get("-t") ??
  (embedded ? "test/pub" : usageError("-t topic is required", USAGE));
const message = flags.get("-m") ??
  (embedded ? "hello from pub.ts" : usageError("-m message is required", USAGE));
const qos = qosFlag(flags, USAGE);
const retain = flags.has("-r");

await using broker = embedded ? await brokerFor(undefined, USAGE) : undefined;
const decoder = new TextDecoder();
let roundTrip!: (text: string) => void;
const received = new Promise<string>((resolve) => roundTrip = resolve);

let client: MQTTClient;
try {
  client = new MQTTClient({
    ...options,
    server: broker?.hostname ?? hostname!,
    port: broker?.port ?? options.port,
    onMessage: (t, payload, retained, q) => {
      const line = `received ${t} ${decoder.decode(payload)} (qos ${q}, retained ${retained})`;
      if (t === topic) roundTrip(line);
    },
  });
} catch (error) {
  usageError(errorText(error), USAGE); // a bad option, e.g. -P without -u
}

try {
  await client.connect({ signal: AbortSignal.timeout(10_000) });
  if (broker) {
    console.log(
      `no -h given: using an ${describe(broker)}; subscribing to ${topic} myself ` +
        "to show the round trip",
    );
    await client.subscribe(topic, qos);
  }
  await client.publish(topic, message, { qos, retain });
  console.log(`published ${topic} ${message} (qos ${qos}, retain ${retain})`);
  if (broker) console.log(await within(received, 5_000, "the message to come back"));
} catch (error) {
  console.error(`pub failed: ${errorText(error)}`);
  Deno.exitCode = 1;
} finally {
  await client.disconnect();
}
