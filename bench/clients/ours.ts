/**
 * Benchmark client: mqtt_async through its public API only.
 *
 * @module
 */
import { FileStore, MQTTClient, silentLogger } from "../../mod.ts";
import { config, emit, epochMs, measure } from "./common.ts";

const cfg = config();
const payload = new Uint8Array(cfg.size).fill(0x78);
let onChange: ((up: boolean) => void) | undefined;

// "inbound": every arrival counts; the n-th one ends the timed section.
let received = 0;
let tFirst = 0;
let allReceived: ((t: number) => void) | undefined;
const arrived = new Promise<number>((resolve) => allReceived = resolve);
function count(): void {
  if (received++ === 0) tFirst = epochMs();
  if (received === cfg.n) allReceived!(epochMs());
}
const inboundHandler = cfg.kind === "inbound" && (cfg.mode ?? "handler") === "handler";

const storeDir = cfg.store === "file"
  ? await Deno.makeTempDir({ prefix: "mqtt-bench-store-" })
  : undefined;
const store = storeDir ? new FileStore(storeDir) : undefined;
const client = new MQTTClient({
  server: cfg.host,
  port: cfg.port,
  clientId: cfg.clientId,
  logger: silentLogger,
  ...(cfg.maxInflight ? { maxInflight: cfg.maxInflight } : {}),
  ...(store ? { store } : {}),
  ...(inboundHandler ? { onMessage: count } : {}),
  onConnectionChange: (up) => onChange?.(up),
});
await client.connect();

/** Streams `n` messages as the "stream" scenario does: each call awaited, the last one sync. */
async function stream(topic: string, n: number, qos: 1 | 2): Promise<void> {
  const group = cfg.group ?? 1;
  const pending: Promise<void>[] = [];
  for (let i = 0; i < n - 1; i++) {
    const call = client.publish(topic, payload, { qos, sync: false });
    if (group === 1) {
      await call;
    } else if (pending.push(call) >= group) {
      // At most `group` calls outstanding: wait for the oldest (each resolved
      // call is durable and windowed; they resolve in order).
      await pending[pending.length - group];
      if (pending.length >= 4 * group) pending.splice(0, pending.length - group);
    }
  }
  await Promise.all(pending);
  await client.publish(topic, payload, { qos, sync: true });
}
const streamQos = cfg.qos === 2 ? 2 : 1;
if (cfg.kind === "stream" && cfg.warmup) await stream(`${cfg.topic}/warmup`, cfg.warmup, streamQos);

let iterate: (() => Promise<void>) | undefined;
if (cfg.kind === "inbound") {
  if (!inboundHandler) {
    // Made before the subscription, so that no arrival is missed.
    const messages = client.messages(cfg.topic);
    iterate = async () => {
      for await (const _m of messages) {
        count();
        if (received === cfg.n) break;
      }
    };
  }
  await client.subscribe(cfg.topic, (cfg.qos ?? 0) as 0 | 1 | 2);
}

/** Resolves with the time of the next connection change to `up`. */
function nextChange(up: boolean): Promise<number> {
  return new Promise((resolve) => {
    onChange = (now) => {
      if (now === up) resolve(epochMs());
    };
  });
}

await measure(async () => {
  const { n, topic } = cfg;
  switch (cfg.kind) {
    case "qos0": {
      const t0 = epochMs();
      for (let i = 0; i < n; i++) await client.publish(topic, payload, { qos: 0 });
      await client.disconnect(); // flushes what is still queued
      return { t0, t1: epochMs() };
    }
    case "sync": {
      const t0 = epochMs();
      for (let i = 0; i < n; i++) await client.publish(topic, payload, { qos: 1 });
      return { t0, t1: epochMs() };
    }
    case "stream": {
      const t0 = epochMs();
      await stream(topic, n, streamQos);
      const t1 = epochMs();
      return { t0, t1, extra: store ? { store: { ...store.stats } } : undefined };
    }
    case "replay": {
      // The orchestrator has cut the link and refuses connections.
      if (client.isConnected()) await nextChange(false);
      const reconnected = nextChange(true);
      const acks: Promise<void>[] = [];
      for (let i = 0; i < n; i++) acks.push(client.publish(topic, payload, { qos: 1 }));
      emit({ type: "queued" });
      const t0 = await reconnected;
      await Promise.all(acks);
      return { t0, t1: epochMs() };
    }
    case "inbound": {
      const iterating = iterate?.();
      const t1 = await arrived;
      await iterating;
      return { t0: tFirst, t1 };
    }
  }
});
if (cfg.kind !== "qos0") await client.disconnect();
if (storeDir) await Deno.remove(storeDir, { recursive: true });
