/**
 * A network outage, end to end, with a custom {@linkcode NetInterface}.
 *
 * The broker runs in this process. Half-way through, the "network" fails: the
 * broker's connections are cut and new ones are refused. The client notices,
 * keeps retrying with back-off, and after a few failed attempts asks the
 * network to bounce itself (`ensureUp({ bounce: true })`, logged as
 * "network: bounce"). Meanwhile the program keeps publishing QoS 1 messages:
 * the calls simply wait. When the network reports "network: up again"
 * (`onUp` listeners), the client retries at once instead of finishing its
 * back-off sleep, reconnects, sends what waited, and every message arrives.
 * (QoS 1 is "at least once": a message whose PUBACK was lost with the
 * connection is delivered again, flagged dup; the example shows and skips it.)
 * Every `onConnectionChange` transition is printed.
 *
 *     deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/flaky_network.ts
 *
 * Flags: `--outage ms` (default 1500), `-n messages` (default 6, half of
 * them published during the outage). The broker must be the embedded one:
 * this example breaks its network on purpose.
 *
 * On a real device the interface would drive the modem or Wi-Fi (see
 * `CommandNetInterface` for one that runs `nmcli`-style commands).
 *
 * @module
 */

import { type EnsureUpOptions, MQTTClient, type NetInterface } from "../mod.ts";
import { FakeBroker } from "../testing.ts";
import { errorText, intFlag, parseFlags, until, within } from "./_args.ts";

const USAGE =
  "usage: deno run --allow-net=127.0.0.1,localhost --allow-sys=hostname examples/flaky_network.ts [--outage ms] [-n messages]";

const flags = parseFlags(Deno.args, { values: ["--outage", "-n"] }, USAGE);
const outageMs = intFlag(flags, "--outage", 1500, 0, 600_000, USAGE);
const count = intFlag(flags, "-n", 6, 2, 10_000, USAGE);

const t0 = performance.now();
const log = (line: string) =>
  console.log(`${((performance.now() - t0) / 1000).toFixed(2)}s ${line}`);

/**
 * A simulated network link in front of the in-process broker. Down means the
 * broker's connections are cut and new ones refused; a bounce takes a
 * moment and, like power-cycling a modem during an outage upstream, does not
 * fix anything by itself; the outage ending does, and is reported to the
 * client as "up again".
 */
class FlakyNetwork implements NetInterface {
  readonly #broker: FakeBroker;
  readonly #listeners = new Set<() => void>();
  #up = true;
  bounces = 0;

  constructor(broker: FakeBroker) {
    this.#broker = broker;
  }

  isUp(): boolean {
    return this.#up;
  }

  async ensureUp({ bounce, signal }: EnsureUpOptions): Promise<void> {
    if (!bounce) return; // nothing to bring up: the link looks up (or we cannot tell)
    this.bounces++;
    log("network: bounce");
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, 100); // the modem takes a moment to come back
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  onUp(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The outage starts: existing connections die, new ones are refused. */
  fail(): void {
    this.#up = false;
    log("network: down (connections cut, broker unreachable)");
    this.#broker.refuseConnections(true);
    this.#broker.dropAll();
  }

  /** The outage ends: tell the client "up again, try now". */
  restore(): void {
    this.#up = true;
    this.#broker.refuseConnections(false);
    log("network: up again");
    for (const listener of [...this.#listeners]) listener();
  }
}

await using broker = await FakeBroker.start({ mode: "broker" });
const net = new FlakyNetwork(broker);
const decoder = new TextDecoder();
// Distinct payloads in order of first arrival. QoS 1 is "at least once": a message whose
// PUBACK was lost with the connection comes again after the reconnect, flagged dup.
const received: string[] = [];
let connections = 0;

const client = new MQTTClient({
  server: broker.hostname,
  port: broker.port,
  clientId: "flaky-network-demo",
  net,
  keepalive: 5,
  responseTime: 2,
  // Short first delay, long cap: the "up again" report is what ends the wait.
  reconnect: { initialDelay: 0.1, maxDelay: 10, bounceAfter: 2 },
  onConnectionChange: (isUp) => {
    log(`connection: ${isUp ? "up" : "down"}`);
    if (isUp) connections++;
  },
  onConnect: async (client, sessionPresent) => {
    log(`onConnect (session ${sessionPresent ? "resumed" : "new"})`);
    if (!sessionPresent) await client.subscribe("flaky/#", 1);
  },
  onMessage: (topic, payload, _retained, _qos, dup) => {
    const text = decoder.decode(payload);
    const again = received.includes(text);
    if (!again) received.push(text);
    log(`received ${topic} ${text}${dup ? " (dup)" : ""}${again ? ", already had it" : ""}`);
  },
});

try {
  await client.connect({ signal: AbortSignal.timeout(10_000) });
  const before = Math.floor(count / 2);
  for (let i = 1; i <= before; i++) {
    await client.publish(`flaky/${i}`, `message ${i}`, { qos: 1 });
    log(`published message ${i}`);
  }
  await until(() => received.length === before, 5_000, "the first messages");

  net.fail();
  // Published while the broker is unreachable: each call waits for the reconnect.
  const waiting: Promise<void>[] = [];
  for (let i = before + 1; i <= count; i++) {
    log(`publishing message ${i} while down (the call waits)`);
    waiting.push(
      client.publish(`flaky/${i}`, `message ${i}`, { qos: 1 }).then(() =>
        log(`published message ${i} (PUBACK after the reconnect)`)
      ),
    );
  }
  await new Promise((resolve) => setTimeout(resolve, outageMs));
  log(`${client.isConnected() ? "still connected?!" : "still down"}, ${net.bounces} bounce(s)`);
  net.restore();

  await until(() => connections === 2, 5_000, "the reconnect");
  await within(Promise.all(waiting), 5_000, "the publishes made while down");
  await until(() => received.length === count, 5_000, `all ${count} messages`);
  const inOrder = received.every((text, i) => text === `message ${i + 1}`);
  log(`all ${count} messages arrived${inOrder ? ", in order" : ` (order: ${received})`}`);
} catch (error) {
  console.error(`flaky_network failed: ${errorText(error)}`);
  Deno.exitCode = 1;
} finally {
  await client.disconnect();
}
