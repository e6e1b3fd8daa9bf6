// Benchmark client logic for MQTT.js 5, shared by the Node (mqttjs.mjs) and
// Deno (mqttjs.ts) entry points. Uses MQTT.js as its docs suggest for
// throughput: QoS 1 streams publish without awaiting, then wait for every callback.
import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import process from "node:process";
import { createInterface } from "node:readline";

const isDeno = typeof globalThis.Deno !== "undefined";

function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function epochMs() {
  return performance.timeOrigin + performance.now();
}

/** User + system CPU µs: process.cpuUsage() on Node, /proc/self/stat on Deno. */
function cpuUs() {
  if (!isDeno) {
    const { user, system } = process.cpuUsage();
    return user + system;
  }
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

function statusKb(field) {
  const match = readFileSync("/proc/self/status", "utf8").match(new RegExp(`${field}:\\s+(\\d+)`));
  return match ? Number(match[1]) : 0;
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function waitFor(line) {
  for (;;) {
    const next = await lines.next();
    if (next.done) throw new Error(`stdin closed while waiting for "${line}"`);
    if (next.value.trim() === line) return;
  }
}

function once(client, event) {
  return new Promise((resolve) => client.once(event, () => resolve(epochMs())));
}

/** Publishes `n` messages without awaiting; resolves when every callback has fired. */
function publishAll(client, topic, payload, n, qos) {
  return new Promise((resolve, reject) => {
    let left = n;
    const done = (error) => {
      if (error) reject(error);
      else if (--left === 0) resolve();
    };
    for (let i = 0; i < n; i++) client.publish(topic, payload, { qos }, done);
  });
}

/** Runs the configured scenario with `mqtt` (the MQTT.js module). */
export async function run(mqtt, cfg) {
  const payload = Buffer.alloc(cfg.size, 0x78);
  const client = mqtt.connect({
    host: cfg.host,
    port: cfg.port,
    clientId: cfg.clientId,
    protocolVersion: 4,
  });
  await once(client, "connect");
  // "inbound": subscribed before "ready"; every arrival counts.
  let received = 0;
  let tFirst = 0;
  const arrived = new Promise((resolve) => {
    if (cfg.kind !== "inbound") return;
    client.on("message", () => {
      if (received++ === 0) tFirst = epochMs();
      if (received === cfg.n) resolve(epochMs());
    });
  });
  if (cfg.kind === "inbound") await client.subscribeAsync(cfg.topic, { qos: cfg.qos ?? 0 });
  if (cfg.kind === "stream" && cfg.warmup) {
    await publishAll(client, `${cfg.topic}/warmup`, payload, cfg.warmup, cfg.qos === 2 ? 2 : 1);
  }
  const idleRssKb = statusKb("VmRSS");
  emit({ type: "ready", idleRssKb });
  await waitFor("go");
  const cpu0 = cpuUs();
  const { n, topic } = cfg;
  let t0 = epochMs();
  let t1;
  switch (cfg.kind) {
    case "qos0":
      // Fired all at once, every QoS 0 callback past the socket's high-water mark becomes a
      // once("drain") listener: quadratic, 200 000 never finish. Await each, as ours does.
      for (let i = 0; i < n; i++) await client.publishAsync(topic, payload, { qos: 0 });
      await new Promise((resolve) => client.end(false, {}, resolve)); // flushes
      break;
    case "sync":
      for (let i = 0; i < n; i++) await client.publishAsync(topic, payload, { qos: 1 });
      break;
    case "stream":
      await publishAll(client, topic, payload, n, cfg.qos === 2 ? 2 : 1);
      break;
    case "inbound":
      t1 = await arrived;
      t0 = tFirst;
      break;
    case "replay": {
      // The orchestrator has cut the link and refuses connections.
      if (client.connected) await once(client, "close");
      // Reconnected = CONNACK received ("connect" is emitted only after the stored
      // messages have been re-sent).
      const reconnected = new Promise((resolve) => {
        const onPacket = (packet) => {
          if (packet.cmd !== "connack") return;
          client.off("packetreceive", onPacket);
          resolve(epochMs());
        };
        client.on("packetreceive", onPacket);
      });
      const acked = publishAll(client, topic, payload, n, 1);
      emit({ type: "queued" });
      t0 = await reconnected;
      await acked;
      break;
    }
  }
  t1 ??= epochMs();
  const cpu1 = cpuUs();
  emit({ type: "result", t0, t1, cpuUs: cpu1 - cpu0, idleRssKb, peakRssKb: statusKb("VmHWM") });
  if (cfg.kind !== "qos0") await new Promise((resolve) => client.end(false, {}, resolve));
  process.exit(0);
}
