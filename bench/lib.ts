/**
 * The benchmark's machinery: the broker, the scenarios, the client processes
 * and one measured run ("cell"). Used by bench.ts and inflight_sweep.ts.
 *
 * @module
 */
import { type Mosquitto, startMosquitto } from "../tests/mosquitto.ts";
import { DelayLine } from "./delay_line.ts";
import { cpuUs } from "./clients/common.ts";

const HOST = "127.0.0.1";
const HERE = new URL(".", import.meta.url).pathname;
// -A: Deno asks for all permissions to read /proc/self (CPU and memory counters).
const DENO_FLAGS = ["run", "--no-lock", "-A"];

/** A scenario: what every client does in one cell. */
export interface Scenario {
  id: string;
  title: string;
  /**
   * What the measured client does: publish ("qos0" end to end, "sync",
   * "stream", "replay"), or "inbound": subscribe and count what a raw
   * publisher process feeds the broker.
   */
  kind: "qos0" | "sync" | "stream" | "replay" | "inbound";
  /** QoS of "stream" (1, or 2) and "inbound" (0 or 1). */
  qos: 0 | 1 | 2;
  size: number;
  n: number;
  /** N under --quick. */
  quickN: number;
  /** One-way delay of the delay line (ms); 0 with no rate: a direct connection. */
  delayMs: number;
  /** Bandwidth cap of the delay line in Mbit/s each way; 0: none. */
  rateMbit: number;
  /** A run taking longer than this is killed and reported as failed. */
  timeoutMs: number;
  /**
   * "default": mosquitto's default configuration (Nagle on, as it ships and
   * as users run it). "nodelay": an extra broker with `set_tcp_nodelay true`.
   */
  broker: "default" | "nodelay";
  /** Our client's session store ("file": a FileStore in a temp dir). */
  store?: "memory" | "file";
  /**
   * Our client, "stream": keep up to `group` calls outstanding (await the
   * oldest before making another), instead of awaiting each.
   */
  group?: number;
  /** The clients that run it (ids); default: {@link DEFAULT_CLIENTS}. */
  clients?: string[];
  /**
   * "stream": messages every client streams the same way to another topic
   * before it reports ready, untimed, so that the timed section measures a
   * warmed-up process (its JIT done), as a long-running gateway is.
   */
  warmup?: number;
}

/** The clients of a scenario that names none. */
export const DEFAULT_CLIENTS = ["ours", "mqttjs-deno", "mqttjs-node", "raw"];
const INBOUND_CLIENTS = ["ours", "ours-iter", "mqttjs-node", "raw"];
/** The scenarios the issue quoted paho-mqtt's figures for run it too, when it is installed. */
const WITH_PAHO = [...DEFAULT_CLIENTS, "paho"];
/** Untimed messages before the loopback streams (see {@linkcode Scenario.warmup}). */
const WARMUP = 20_000;

export const SCENARIOS: Scenario[] = [
  s("qos0-100B", "QoS 0, 100 B, end to end", "qos0", 100, 200_000, 20_000, { qos: 0 }),
  s("sync-100B", "QoS 1 sync, 100 B", "sync", 100, 20_000, 2_000),
  s("stream-100B", "QoS 1 stream, 100 B", "stream", 100, 50_000, 5_000, {
    warmup: WARMUP,
    clients: WITH_PAHO,
  }),
  s("stream-1400B", "QoS 1 stream, 1 400 B", "stream", 1400, 50_000, 5_000, { warmup: WARMUP }),
  s("stream-2800B", "QoS 1 stream, 2 800 B", "stream", 2800, 50_000, 5_000, { warmup: WARMUP }),
  // The first burst of a fresh process, JIT and all.
  s("stream-100B-cold", "QoS 1 stream, 100 B, fresh process", "stream", 100, 50_000, 5_000, {
    clients: ["ours", "mqttjs-node", "raw"],
  }),
  // MQTT.js, firing 200 000 publishes at once, does not finish within the 120 s
  // timeout (neither on Node nor on Deno, in every run so far): left out.
  s("stream-100B-200k", "QoS 1 stream, 100 B × 200 000 (memory)", "stream", 100, 200_000, 20_000, {
    clients: ["ours", "raw"],
  }),
  s("stream-100B-rtt20", "QoS 1 stream, 100 B, 20 ms RTT", "stream", 100, 20_000, 1_000, {
    delayMs: 10,
    clients: WITH_PAHO,
  }),
  s("stream-100B-rtt100", "QoS 1 stream, 100 B, 100 ms RTT", "stream", 100, 20_000, 1_000, {
    delayMs: 50,
    clients: WITH_PAHO,
  }),
  s(
    "stream-100B-rtt20-10mbit",
    "QoS 1 stream, 100 B, 20 ms RTT, 10 Mbit/s",
    "stream",
    100,
    20_000,
    1_000,
    { delayMs: 10, rateMbit: 10 },
  ),
  s("replay-2000-rtt20", "Replay after outage, 20 ms RTT", "replay", 100, 2_000, 500, {
    delayMs: 10,
    clients: WITH_PAHO,
  }),
  s("inbound-qos0", "Inbound QoS 0, 100 B", "inbound", 100, 200_000, 20_000, {
    qos: 0,
    clients: INBOUND_CLIENTS,
  }),
  s("inbound-qos1", "Inbound QoS 1, 100 B", "inbound", 100, 50_000, 5_000, {
    qos: 1,
    clients: INBOUND_CLIENTS,
  }),
  s("qos2-stream-100B", "QoS 2 stream, 100 B", "stream", 100, 20_000, 2_000, {
    qos: 2,
    clients: ["ours", "mqttjs-node"],
  }),
  s("stream-100B-filestore", "QoS 1 stream, 100 B, FileStore", "stream", 100, 10_000, 2_000, {
    store: "file",
    clients: ["ours"],
  }),
  s(
    "stream-100B-grouped",
    "QoS 1 stream, 100 B, 1024 calls outstanding",
    "stream",
    100,
    50_000,
    5_000,
    {
      group: 1024,
      clients: ["ours"],
    },
  ),
  s(
    "stream-100B-filestore-grouped",
    "QoS 1 stream, 100 B, FileStore, 1024 calls outstanding",
    "stream",
    100,
    50_000,
    5_000,
    { store: "file", group: 1024, clients: ["ours"] },
  ),
  s(
    "stream-100B-nodelay",
    "QoS 1 stream, 100 B, broker with set_tcp_nodelay",
    "stream",
    100,
    50_000,
    5_000,
    { broker: "nodelay", clients: ["ours", "mqttjs-node", "raw"], warmup: WARMUP },
  ),
];

function s(
  id: string,
  title: string,
  kind: Scenario["kind"],
  size: number,
  n: number,
  quickN: number,
  more: Partial<Scenario> = {},
): Scenario {
  // MQTT.js replays one message per round trip: 2 000 take about 45 s at 20 ms.
  const timeoutMs = kind === "replay" ? 180_000 : kind === "qos0" ? 60_000 : 120_000;
  return {
    id,
    title,
    kind,
    qos: 1,
    size,
    n,
    quickN,
    delayMs: 0,
    rateMbit: 0,
    timeoutMs,
    broker: "default",
    ...more,
  };
}

/** The broker, RTT and link of a scenario, as the tables print them. */
export function describeLink(scenario: Scenario): { broker: string; rtt: string; link: string } {
  return {
    broker: scenario.broker === "nodelay" ? "set_tcp_nodelay" : "default",
    rtt: scenario.delayMs > 0 ? `${2 * scenario.delayMs} ms` : "loopback",
    link: scenario.rateMbit > 0 ? `${scenario.rateMbit} Mbit/s` : "–",
  };
}

/** A client under test: how to start its process. */
export interface ClientSpec {
  id: string;
  title: string;
  command(cfg: string): [string, string[]];
  /** Merged into the client's JSON config. */
  config?: Record<string, unknown>;
}

const deno = (file: string) => (cfg: string): [string, string[]] => [
  Deno.execPath(),
  [...DENO_FLAGS, `${HERE}clients/${file}`, cfg],
];

export const CLIENTS: ClientSpec[] = [
  { id: "ours", title: "mqtt_async (Deno)", command: deno("ours.ts") },
  {
    id: "ours-iter",
    title: "mqtt_async messages() (Deno)",
    command: deno("ours.ts"),
    config: { mode: "iter" },
  },
  { id: "mqttjs-deno", title: "MQTT.js 5 (Deno)", command: deno("mqttjs.ts") },
  {
    id: "mqttjs-node",
    title: "MQTT.js 5 (Node)",
    command: (cfg) => ["node", [`${HERE}clients/mqttjs.mjs`, cfg]],
  },
  { id: "raw", title: "raw limit (Deno)", command: deno("raw.ts") },
  {
    id: "paho",
    title: "paho-mqtt 1.6 (Python)",
    command: (cfg) => [PYTHON, [`${HERE}clients/paho_client.py`, cfg]],
  },
];

/** Debian's Python, where `apt-get install python3-paho-mqtt` puts paho-mqtt. */
const PYTHON = "/usr/bin/python3";

/** Whether paho-mqtt can be imported (the "paho" client runs only then). */
export async function hasPaho(): Promise<boolean> {
  try {
    const out = await new Deno.Command(PYTHON, {
      args: ["-c", "import paho.mqtt.client"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** Installs MQTT.js for Node into bench/node when it is missing. */
export async function ensureNodeMqtt(): Promise<void> {
  try {
    Deno.statSync(`${HERE}node/node_modules/mqtt/package.json`);
    return;
  } catch { /* install it */ }
  console.error("installing MQTT.js for Node into bench/node ...");
  const out = await new Deno.Command("npm", {
    args: ["install", "--no-audit", "--no-fund", "--prefix", `${HERE}node`],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("npm install --prefix bench/node failed");
}

/**
 * The benchmark's broker: unlimited in-flight and queues, no persistence,
 * and mosquitto's own TCP default (Nagle's algorithm on, as it ships and as
 * users run it). With `nodelay`, `set_tcp_nodelay true` (the extra broker).
 */
export function startBroker(options: { nodelay?: boolean } = {}): Promise<Mosquitto> {
  const nodelay = options.nodelay ? "\nset_tcp_nodelay true" : "";
  return startMosquitto({
    persistence: false,
    extraConfig: `max_inflight_messages 0\nmax_queued_messages 0${nodelay}`,
  });
}

const live = new Set<ClientProcess>();

/** Kills every client process still running (for an interrupted run). */
export function killClients(): void {
  for (const p of live) p.kill();
}

/** A running client process speaking JSON lines. */
class ClientProcess {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  #stderr = "";
  readonly #stderrDone: Promise<void>;

  constructor(command: string, args: string[]) {
    this.#child = new Deno.Command(command, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    live.add(this);
    this.#child.status.then(() => live.delete(this));
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = lines(this.#child.stdout);
    const stderr = this.#child.stderr;
    this.#stderrDone = (async () => {
      for await (const chunk of stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr = (this.#stderr + chunk).slice(-4000);
      }
    })();
  }

  /** The next JSON record of type `type` (others are skipped). */
  async expect(type: string): Promise<Record<string, number>> {
    for (;;) {
      const next = await this.#lines.next();
      if (next.done) {
        await this.#stderrDone;
        throw new Error(`client exited (or timed out) before "${type}":\n${this.#stderr}`);
      }
      let record;
      try {
        record = JSON.parse(next.value);
      } catch {
        continue; // a stray line
      }
      if (record.type === type) return record;
    }
  }

  send(line: string): Promise<void> {
    return this.#writer.write(new TextEncoder().encode(line + "\n"));
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => this.kill(), 10_000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#stderrDone;
  }

  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
}

/** What one cell measured. */
export interface RunResult {
  scenario: string;
  client: string;
  n: number;
  size: number;
  /** Messages counted (QoS 0: by the subscriber). */
  delivered: number;
  seconds: number;
  msgsPerSec: number;
  mbPerSec: number;
  cpuUsPerMsg: number;
  /** The broker's CPU µs per message while the client ran (from go to its result). */
  brokerCpuUsPerMsg: number;
  /** The broker's CPU time over that wall time: near 100 % means the broker is the limit. */
  brokerBusyPercent: number;
  idleRssMb: number;
  peakRssMb: number;
  maxInflight?: number;
  /** Replay: ms from the moment the line took connections again to the client's CONNACK. */
  reconnectMs?: number;
  /** FileStore: fsyncs (every sync the store issued) per 1 000 messages. */
  syncsPer1000?: number;
}

let runCounter = 0;

/** Runs one client through one scenario once against `broker`. */
export async function runCell(
  broker: Mosquitto,
  scenario: Scenario,
  client: ClientSpec,
  options: { n?: number; maxInflight?: number; extraDenoFlags?: string[]; timeoutMs?: number } = {},
): Promise<RunResult> {
  const n = options.n ?? scenario.n;
  const tag = `${Date.now().toString(36)}${(runCounter++).toString(36)}`;
  const line = scenario.delayMs > 0 || scenario.rateMbit > 0 || scenario.kind === "replay"
    ? await DelayLine.start({
      targetHostname: HOST,
      targetPort: broker.port,
      delayMs: scenario.delayMs,
      rateMbit: scenario.rateMbit,
    })
    : undefined;
  const cfg = {
    kind: scenario.kind,
    qos: scenario.qos,
    n,
    size: scenario.size,
    host: HOST,
    port: line?.port ?? broker.port,
    topic: `bench/${tag}`,
    clientId: `b${tag}`.slice(0, 23),
    maxInflight: options.maxInflight,
    store: scenario.store,
    group: scenario.group,
    warmup: scenario.warmup,
    ...client.config,
  };
  const started: ClientProcess[] = [];
  const spawn = (spec: ClientSpec, config: object) => {
    const [cmd, args] = spec.command(JSON.stringify(config));
    const flags = options.extraDenoFlags; // the measured client's only (e.g. --cpu-prof)
    if (flags && spec === client && cmd === Deno.execPath()) args.splice(1, 0, ...flags);
    const proc = new ClientProcess(cmd, args);
    started.push(proc);
    return proc;
  };
  const timeout = setTimeout(
    () => started.forEach((p) => p.kill()),
    options.timeoutMs ?? scenario.timeoutMs,
  );
  try {
    let counter: ClientProcess | undefined;
    if (scenario.kind === "qos0") {
      counter = spawn(COUNTER, { ...cfg, clientId: `c${tag}`.slice(0, 23) });
      await counter.expect("ready");
    }
    const proc = spawn(client, cfg);
    await proc.expect("ready");
    // Inbound: a raw publisher, straight to the broker, feeds the measured subscriber.
    let publisher: ClientProcess | undefined;
    if (scenario.kind === "inbound") {
      publisher = spawn(RAW_PUBLISHER, {
        ...cfg,
        kind: scenario.qos === 0 ? "qos0" : "stream",
        port: broker.port,
        clientId: `p${tag}`.slice(0, 23),
        mode: undefined,
      });
      await publisher.expect("ready");
    }
    let brokerCpu0 = processCpuUs(broker.pid);
    let brokerWall0 = performance.now();
    let allowedAt = 0;
    if (scenario.kind === "replay") {
      line!.refuse(true);
      line!.cutAll();
      await proc.send("go");
      await proc.expect("queued");
      await delay(100);
      brokerCpu0 = processCpuUs(broker.pid);
      brokerWall0 = performance.now();
      allowedAt = performance.timeOrigin + performance.now();
      line!.refuse(false);
    } else {
      await proc.send("go");
      if (publisher) await publisher.send("go");
    }
    const published = publisher?.expect("result");
    const result = await proc.expect("result");
    // Read at once: the client's own shutdown should not count as broker time.
    const brokerCpu1 = processCpuUs(broker.pid);
    const brokerWall1 = performance.now();
    let delivered = n;
    let start = result.t0;
    let end = result.t1;
    if (counter) {
      const sub = await counter.expect("result");
      delivered = sub.count;
      end = sub.tLast;
    }
    if (published) start = (await published).t0; // from the publisher's first write
    await Promise.all(started.map((p) => p.close()));
    const seconds = (end - start) / 1000;
    const store = (result as unknown as { store?: { syncs: number } }).store;
    return {
      scenario: scenario.id,
      client: client.id,
      n,
      size: scenario.size,
      delivered,
      seconds,
      msgsPerSec: delivered / seconds,
      mbPerSec: (delivered * scenario.size) / seconds / 1e6,
      cpuUsPerMsg: result.cpuUs / n,
      brokerCpuUsPerMsg: (brokerCpu1 - brokerCpu0) / n,
      brokerBusyPercent: (brokerCpu1 - brokerCpu0) / ((brokerWall1 - brokerWall0) * 10),
      idleRssMb: result.idleRssKb / 1024,
      peakRssMb: result.peakRssKb / 1024,
      ...(options.maxInflight ? { maxInflight: options.maxInflight } : {}),
      ...(allowedAt ? { reconnectMs: result.t0 - allowedAt } : {}),
      ...(store ? { syncsPer1000: (store.syncs * 1000) / n } : {}),
    };
  } finally {
    clearTimeout(timeout);
    for (const p of started) p.kill();
    await line?.close();
  }
}

const COUNTER: ClientSpec = { id: "counter", title: "subscriber", command: deno("counter.ts") };
const RAW_PUBLISHER: ClientSpec = { id: "publisher", title: "publisher", command: deno("raw.ts") };
/**
 * The broker's CPU time in µs; NaN when it cannot be read (another process's
 * /proc entry needs `-A` in Deno).
 */
function processCpuUs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    return cpuUs(pid);
  } catch {
    return NaN;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
