/**
 * Benchmark client: mqtt_async through its public API only.
 *
 * @module
 */
import { MQTTClient, silentLogger } from "../../mod.ts";
import { config, emit, epochMs, measure } from "./common.ts";

const cfg = config();
const payload = new Uint8Array(cfg.size).fill(0x78);
let onChange: ((up: boolean) => void) | undefined;
const client = new MQTTClient({
  server: cfg.host,
  port: cfg.port,
  clientId: cfg.clientId,
  logger: silentLogger,
  ...(cfg.maxInflight ? { maxInflight: cfg.maxInflight } : {}),
  onConnectionChange: (up) => onChange?.(up),
});
await client.connect();

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
      for (let i = 0; i < n - 1; i++) {
        await client.publish(topic, payload, { qos: 1, sync: false });
      }
      await client.publish(topic, payload, { qos: 1, sync: true });
      return { t0, t1: epochMs() };
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
  }
});
if (cfg.kind !== "qos0") await client.disconnect();
