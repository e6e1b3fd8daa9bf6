/**
 * How many messages wait at the broker: samples /proc/net/tcp (about every
 * millisecond) while one client streams QoS 1 to a private default-config
 * mosquitto on loopback, and reports the bytes the broker has not read yet
 * (its sockets' receive queues, in 104-byte messages), the PUBACK bytes the
 * client has not read, and the rate. The sampler shares the CPUs, so the
 * rate is lower than in `bench.ts`; compare the queues.
 *
 *   deno run -A bench/broker_queue.ts [--client=ours] [--maxInflight=N] [--n=200000]
 *
 * @module
 */
import { CLIENTS, runCell, SCENARIOS, startBroker } from "./lib.ts";

const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const clientId = arg("client") ?? "ours";
const maxInflight = arg("maxInflight") ? Number(arg("maxInflight")) : undefined;
const n = Number(arg("n") ?? 200_000);
const client = CLIENTS.find((c) => c.id === clientId);
if (!client) throw new Error(`no client ${clientId}`);

interface Sample {
  brokerUnread: number;
  clientUnread: number;
}

/** Sums the receive queues of established sockets on `port`: the broker's side and the client's. */
function sample(portHex: string): Sample {
  let brokerUnread = 0, clientUnread = 0;
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[3] !== "01") continue; // 01: ESTABLISHED
    const unread = parseInt(f[4].split(":")[1], 16);
    if (f[1].endsWith(`:${portHex}`)) brokerUnread += unread;
    else if (f[2].endsWith(`:${portHex}`)) clientUnread += unread;
  }
  return { brokerUnread, clientUnread };
}

const broker = await startBroker();
const portHex = broker.port.toString(16).toUpperCase().padStart(4, "0");
const samples: Sample[] = [];
let sampling = true;
const sampler = (async () => {
  while (sampling) {
    samples.push(sample(portHex));
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
})();
const scenario = { ...SCENARIOS.find((s) => s.id === "stream-100B")!, warmup: 0 };
let result;
try {
  result = await runCell(broker, scenario, client, { n, ...(maxInflight ? { maxInflight } : {}) });
} finally {
  sampling = false;
  await sampler;
  await broker.close();
}
const busy = samples.filter((s) => s.brokerUnread + s.clientUnread > 0);
const pick = (key: keyof Sample, p: number) => {
  const sorted = busy.map((s) => s[key]).sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.floor(p * (sorted.length - 1))];
};
const msgs = (bytes: number) => (bytes / 104).toFixed(0);
console.log(
  `${client.title}${maxInflight ? `, maxInflight ${maxInflight}` : ""}: ` +
    `${Math.round(result.msgsPerSec)} msgs/s; waiting at the broker (100 B messages): median ` +
    `${msgs(pick("brokerUnread", 0.5))}, p90 ${msgs(pick("brokerUnread", 0.9))}, max ` +
    `${msgs(pick("brokerUnread", 1))}; PUBACK bytes unread by the client: median ` +
    `${pick("clientUnread", 0.5)}, p90 ${pick("clientUnread", 0.9)} (${busy.length} samples)`,
);
