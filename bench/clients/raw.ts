/**
 * Benchmark client: the raw limit. No MQTT library: frames are pre-encoded
 * before the clock starts, written in large batches on `Deno.connect`, and
 * PUBACKs are counted as they come back. As "inbound" it is the raw
 * subscriber: it counts PUBLISH frames and answers QoS 1 ones with one write
 * of PUBACKs per read. It also serves as the publisher feeding the inbound
 * scenarios.
 *
 * @module
 */
import { config, emit, epochMs, measure } from "./common.ts";
import {
  mqttConnect,
  pubackFor,
  publishFrame,
  readFrames,
  subscribeFrame,
  writeAll,
} from "./wire.ts";

const cfg = config();
const { n, topic } = cfg;
const qos = cfg.kind === "qos0" ? 0 : 1;
const payload = new Uint8Array(cfg.size).fill(0x78);
const BATCH_BYTES = 256 * 1024;
const MAX_OUTSTANDING = 60_000; // packet ids are 16-bit: never reuse one still in flight

/** `count` frames to `to`, concatenated into batches of about BATCH_BYTES. */
function encodeBatches(count = n, to = topic): { bytes: Uint8Array; count: number }[] {
  const batches: { bytes: Uint8Array; count: number }[] = [];
  let frames: Uint8Array[] = [];
  let size = 0;
  const close = () => {
    const bytes = new Uint8Array(size);
    let offset = 0;
    for (const f of frames) {
      bytes.set(f, offset);
      offset += f.length;
    }
    batches.push({ bytes, count: frames.length });
    frames = [];
    size = 0;
  };
  for (let i = 0; i < count; i++) {
    const f = publishFrame(to, payload, qos, (i % 65_535) + 1);
    frames.push(f);
    size += f.length;
    if (size >= BATCH_BYTES) close();
  }
  if (frames.length > 0) close();
  return batches;
}

/** Counts PUBACKs on `conn`; `until(k)` resolves once k have arrived. */
function ackCounter(conn: Deno.Conn) {
  let acked = 0;
  let waiter: { k: number; wake: () => void } | undefined;
  const ended = readFrames(conn, (type) => {
    if (type !== 4) return;
    acked++;
    if (waiter && acked >= waiter.k) {
      const { wake } = waiter;
      waiter = undefined;
      wake();
    }
  });
  const until = (k: number) =>
    acked >= k ? Promise.resolve() : new Promise<void>((wake) => waiter = { k, wake });
  return { until, ended, acked: () => acked };
}

async function streamAll(
  conn: Deno.Conn,
  batches: { bytes: Uint8Array; count: number }[],
  acks = ackCounter(conn),
) {
  const base = acks.acked();
  let sent = 0;
  for (const batch of batches) {
    if (qos) await acks.until(base + sent + batch.count - MAX_OUTSTANDING);
    await writeAll(conn, batch.bytes);
    sent += batch.count;
  }
  if (qos) await acks.until(base + sent);
}

let conn = await mqttConnect(cfg.host, cfg.port, cfg.clientId);
// Encoded before the clock and the CPU count start (replay encodes while the link is down).
const batches = cfg.kind === "qos0" || cfg.kind === "stream" ? encodeBatches() : [];
const frames = cfg.kind === "sync"
  ? Array.from({ length: n }, (_, i) => publishFrame(topic, payload, 1, i % 65_535 + 1))
  : [];
/** The raw subscriber: SUBACK before "ready", then n arrivals timed from the first. */
async function subscribed(): Promise<() => Promise<{ t0: number; t1: number }>> {
  const qos = cfg.qos === 1 ? 1 : 0;
  let received = 0, tFirst = 0, tLast = 0;
  let acks: Uint8Array[] = [];
  let onSuback: () => void;
  const suback = new Promise<void>((resolve) => onSuback = resolve);
  let onAll: () => void;
  const all = new Promise<void>((resolve) => onAll = resolve);
  const ended = readFrames(conn, (type, frame) => {
    if (type === 9) return onSuback();
    if (type !== 3) return;
    if (qos) acks.push(pubackFor(frame));
    tLast = epochMs();
    if (received++ === 0) tFirst = tLast;
    if (received === n) onAll();
  }, async () => {
    if (acks.length === 0) return;
    const out = new Uint8Array(acks.length * 4);
    acks.forEach((a, i) => out.set(a, i * 4));
    acks = [];
    await writeAll(conn, out);
  });
  await writeAll(conn, subscribeFrame(topic, qos));
  await suback;
  return async () => {
    await Promise.race([all, ended]);
    if (received < n) throw new Error(`connection ended after ${received} of ${n}`);
    return { t0: tFirst, t1: tLast };
  };
}
const inbound = cfg.kind === "inbound" ? await subscribed() : undefined;
// One reader of PUBACKs for the warm-up and the timed stream.
const streamAcks = cfg.kind === "stream" ? ackCounter(conn) : undefined;
if (streamAcks && cfg.warmup) {
  await streamAll(conn, encodeBatches(cfg.warmup, `${topic}/warmup`), streamAcks);
}

await measure(async () => {
  if (inbound) return await inbound();
  if (cfg.kind === "sync") {
    const acks = ackCounter(conn);
    const t0 = epochMs();
    for (let i = 0; i < n; i++) {
      await writeAll(conn, frames[i]);
      await acks.until(i + 1);
    }
    return { t0, t1: epochMs() };
  }
  if (cfg.kind === "replay") {
    // The orchestrator has cut the link: wait for the end, queue, reconnect when allowed.
    await readFrames(conn, () => {});
    conn.close();
    const replay = encodeBatches();
    emit({ type: "queued" });
    for (;;) {
      try {
        conn = await mqttConnect(cfg.host, cfg.port, cfg.clientId);
        break;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    const t0 = epochMs();
    await streamAll(conn, replay);
    return { t0, t1: epochMs() };
  }
  const t0 = epochMs();
  await streamAll(conn, batches, streamAcks);
  return { t0, t1: epochMs() };
});
try {
  await writeAll(conn, new Uint8Array([0xe0, 0]));
  conn.close();
} catch { /* already closed */ }
