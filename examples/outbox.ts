/**
 * A gateway's outbox: sensor readings published at QoS 1 through a
 * {@linkcode FileStore}, so that none is lost to a broker outage or to the
 * gateway's own restart (a redeploy, a crash, `kill -9`, a power cut).
 *
 *     deno run --allow-net --allow-sys=hostname --allow-read=./outbox --allow-write=./outbox \
 *       examples/outbox.ts -h broker.local -t site/a/readings -n 10
 *
 * Each run first says what the outbox (`--dir`, default `./outbox`) holds
 * from an earlier run: those readings go to the broker first, with their
 * original packet ids and DUP. Then the run queues its own `-n` readings
 * (one every `--interval` ms) and waits for the broker's acknowledgements.
 * If the broker is unreachable it keeps trying in the background; after
 * `--wait` seconds it stops, and what is still unacknowledged stays in the
 * outbox for the next run. Kill it at any moment: a reading that was
 * queued is either acknowledged or still in the outbox.
 *
 * Without `-h` it shows all that in one process, with an embedded broker
 * and a monitor subscriber: readings go out, the broker becomes unreachable,
 * more readings are queued, the gateway restarts (a new client on the same
 * outbox), the broker comes back, and every reading arrives:
 *
 *     deno run --allow-net=127.0.0.1 --allow-sys=hostname --allow-read=./outbox \
 *       --allow-write=./outbox examples/outbox.ts
 *
 * Flags: `-h host`, `-p port`, `-t topic` (default `gateway/readings`),
 * `-n readings` (default 6), `--dir outbox` (default `./outbox`),
 * `--interval ms` (default 0), `--wait s` (default 10), `-u user`,
 * `-P password`, `-i clientId` (default `outbox-gateway`: it must stay the
 * same across runs), `--cafile file`, `--cert file`, `--key file`,
 * `--tls-use-os-certs`, `-d` (debug log), `--help`. Exits 0 once every
 * reading was acknowledged, 1 when some wait in the outbox (or the outbox
 * is in use by another process), 2 on a usage error.
 *
 * @module
 */

import { FileStore, MQTTClient, type MQTTClientOptions } from "../mod.ts";
import { FakeBroker } from "../testing.ts";
import {
  errorText,
  intFlag,
  MOSQUITTO_BOOLEANS,
  MOSQUITTO_VALUES,
  mosquittoOptions,
  parseFlags,
  until,
  usageError,
  within,
} from "./_args.ts";

const USAGE = "usage: deno run --allow-net --allow-sys=hostname --allow-read=DIR " +
  "--allow-write=DIR examples/outbox.ts " +
  "[-h host [-p port] [--cafile file] [--cert file --key file] [--tls-use-os-certs]] " +
  "[-t topic] [-n readings] [--dir DIR] [--interval ms] [--wait s] " +
  "[-u user [-P password]] [-i clientId] [-d] [--help]";

const flags = parseFlags(
  Deno.args,
  {
    values: [
      ...MOSQUITTO_VALUES.filter((f) => f !== "-q"),
      "-t",
      "-n",
      "--dir",
      "--interval",
      "--wait",
    ],
    booleans: MOSQUITTO_BOOLEANS,
  },
  USAGE,
);
const { hostname, options } = mosquittoOptions(flags, USAGE, "outbox-gateway");
const clientId = options.clientId!;
const topic = flags.get("-t") ?? "gateway/readings";
const count = intFlag(flags, "-n", 6, 1, 100_000, USAGE);
const dir = flags.get("--dir") ?? "./outbox";
const intervalMs = intFlag(flags, "--interval", 0, 0, 3_600_000, USAGE);
const waitMs = intFlag(flags, "--wait", 10, 1, 86_400, USAGE) * 1000;
if (topic === "" || /[+#]/.test(topic)) usageError(`-t ${JSON.stringify(topic)}: bad topic`, USAGE);

const decoder = new TextDecoder();
/** Labels this run's readings, so that a reading from an earlier run is told apart. */
const run = new Date().toISOString();

function say(line: string): void {
  console.log(line);
}

function reading(i: number): string {
  return `run ${run} reading ${i}: ${(20 + (i % 7) * 0.5).toFixed(1)} C`;
}

/** What the outbox holds for `clientId`: the payloads of unacknowledged readings. */
async function pending(): Promise<string[]> {
  const store = new FileStore(dir);
  const session = await store.open(clientId);
  await store.close();
  return session.publishes.map((p) => decoder.decode(p.payload));
}

/** A client on the outbox. */
function gateway(server: string, port: number | undefined, extra: Partial<MQTTClientOptions>) {
  return new MQTTClient({
    ...options,
    server,
    port,
    clean: false, // the broker keeps our session too (QoS 1 exchanges in flight)
    store: new FileStore(dir),
    responseTime: 2,
    reconnect: { initialDelay: 0.1, maxDelay: 2 },
    ...extra,
  });
}

/** Connects, or, when the broker is unreachable, keeps trying in the background. */
async function connectOrKeepTrying(client: MQTTClient): Promise<void> {
  try {
    // connect() opens the outbox first (it throws if another process holds it).
    await client.connect({ signal: AbortSignal.timeout(Math.min(waitMs, 5_000)) });
  } catch (error) {
    if (/session store/.test(errorText(error))) throw error;
    say(`broker unreachable (${errorText(error)}): readings wait in the outbox`);
    client.start();
  }
}

/** Queues readings `from..to`; resolves once all are acknowledged. */
async function queue(client: MQTTClient, from: number, to: number): Promise<void> {
  const acknowledged: Promise<void>[] = [];
  for (let i = from; i <= to; i++) {
    if (i > from && intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
    const done = client.publish(topic, reading(i), { qos: 1 });
    say(`queued reading ${i}`);
    acknowledged.push(done.then(() => say(`delivered reading ${i}`)));
  }
  await Promise.all(acknowledged);
}

async function showOutbox(what: string): Promise<string[]> {
  const held = await pending();
  say(`outbox ${dir} (${clientId}): ${held.length} ${what}`);
  for (const payload of held) say(`  in the outbox: ${payload}`);
  return held;
}

async function gatewayRun(server: string, port: number | undefined): Promise<void> {
  await showOutbox("reading(s) from an earlier run, to be sent first");
  const client = gateway(server, port, {
    onConnectionChange: (up) => say(`broker connection ${up ? "up" : "down"}`),
  });
  try {
    await connectOrKeepTrying(client);
    const delivered = await within(queue(client, 1, count), waitMs, "acknowledgements")
      .then(() => true, () => false);
    if (delivered) {
      say(`all ${count} readings delivered; the outbox is empty`);
    } else {
      say(`not every reading was acknowledged within ${waitMs / 1000} s`);
      Deno.exitCode = 1;
    }
  } finally {
    await client.disconnect();
  }
  if (Deno.exitCode === 1) await showOutbox("reading(s) kept for the next run");
}

/** The demo: an embedded broker, a monitor, an outage and a restart. */
async function demo(): Promise<void> {
  await using broker = await FakeBroker.start({ mode: "broker" });
  say(`no -h given: demo with an embedded broker on ${broker.hostname}:${broker.port}`);
  const earlier = await showOutbox("reading(s) from an earlier run");
  const arrived = new Set<string>();
  let monitorUps = 0;
  const monitor = new MQTTClient({
    server: broker.hostname,
    port: broker.port,
    clientId: "outbox-monitor",
    logger: options.logger,
    reconnect: { initialDelay: 0.05, maxDelay: 0.2 },
    onConnectionChange: (up) => {
      if (up) monitorUps++;
    },
    onMessage: (_topic, payload, _retained, _qos, dup) => {
      const text = decoder.decode(payload);
      say(`monitor received ${text}${dup ? " (dup)" : ""}`);
      arrived.add(text);
    },
  });
  await monitor.connect();
  await monitor.subscribe(topic, 1);
  const half = Math.ceil(count / 2);
  try {
    say("gateway run 1");
    const first = gateway(broker.hostname, broker.port, {});
    await first.connect();
    await queue(first, 1, half - 1);
    say("broker unreachable: connections cut, new ones refused");
    broker.refuseConnections(true);
    broker.dropAll();
    const waiting = [];
    for (let i = half; i <= count; i++) {
      waiting.push(first.publish(topic, reading(i), { qos: 1 }).catch(() => {}));
      say(`queued reading ${i} while the broker is unreachable`);
    }
    say("gateway restarts (a redeploy; a crash would do the same)");
    await first.disconnect(); // the calls waiting above reject; their readings stay
    await Promise.all(waiting);
    await showOutbox("reading(s) wait in the outbox");

    say("broker reachable again");
    broker.refuseConnections(false);
    await until(() => monitorUps >= 2, 10_000, "the monitor to reconnect");
    say("gateway run 2");
    const second = gateway(broker.hostname, broker.port, {});
    try {
      await second.connect(); // the outbox goes first
      await queue(second, count + 1, count + 1);
    } finally {
      await second.disconnect();
    }
    const ours = Array.from({ length: count + 1 }, (_, i) => reading(i + 1));
    await until(
      () => ours.every((r) => arrived.has(r)),
      5_000,
      `all ${count + 1} readings at the monitor`,
    );
    const fromEarlier = earlier.filter((r) => arrived.has(r)).length;
    say(
      `all ${count + 1} readings arrived, ${count - half + 1} of them from the outbox ` +
        `after the restart` + (fromEarlier > 0 ? ` (and ${fromEarlier} from an earlier run)` : ""),
    );
  } finally {
    await monitor.disconnect();
  }
}

try {
  if (hostname === undefined) await demo();
  else await gatewayRun(hostname, options.port);
} catch (error) {
  console.error(`outbox failed: ${errorText(error)}`);
  Deno.exitCode = 1;
}
