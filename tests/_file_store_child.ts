/**
 * The child process of tests/file_store_crash_test.ts, and the deterministic
 * op stream it and the parent share.
 *
 * deno run --allow-read=DIR --allow-write=DIR tests/_file_store_child.ts MODE DIR SEED [SEGMENT]
 *
 * - `stream`: opens a FileStore on DIR for client {@linkcode CLIENT_ID} and
 *   appends the op stream of SEED event by event, committing whenever the
 *   previous commit finished (as the engine does); after each commit it
 *   prints `D <n>`: the first n ops of the stream are durable. Runs until
 *   killed.
 * - `hold`: opens the store, prints `R`, and waits until killed.
 *
 * @module
 */

import type { PublishProperties, QoS } from "../codec/packets.ts";
import { FileStore } from "../store/file.ts";
import type { StoreOp } from "../store/store.ts";

/** The client id the children use (with characters that need encoding). */
export const CLIENT_ID = "gw/7 crash:ü";

/** A small seeded PRNG (mulberry32): floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Bytes of message `seq`: its number, then a pattern derived from it. */
export function payloadOf(seq: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (seq * 31 + i * 7) & 0xff;
  new DataView(bytes.buffer).setUint32(0, seq);
  return bytes;
}

/**
 * The op stream of `seed`, one event (a list of ops appended together) at a
 * time: QoS 1 and 2 publishes (some with MQTT 5 properties) acknowledged a
 * while later, QoS 2 ones released first, and incoming QoS 2 ids delivered
 * and released. At most about `window` publishes are unfinished at once.
 */
export function* events(seed: number, window = 40): Generator<StoreOp[]> {
  const random = prng(seed);
  const live: { seq: number; id: number; qos: QoS; released: boolean }[] = [];
  const incoming: number[] = [];
  let nextIncoming = 1;
  for (let seq = 1;; seq++) {
    const event: StoreOp[] = [];
    const roll = random();
    if (roll < 0.55 || live.length === 0) {
      const id = (seq % 65000) + 1;
      const qos: QoS = random() < 0.5 ? 1 : 2;
      const length = 8 + Math.floor(random() * 150);
      let properties: PublishProperties | undefined;
      if (random() < 0.2) {
        properties = {
          contentType: "application/octet-stream",
          correlationData: payloadOf(seq, 5),
          userProperties: [["k", String(seq)], ["k", "again"]],
        };
      }
      const record = {
        id,
        qos,
        topic: `t/${seq}`,
        payload: payloadOf(seq, length),
        retain: random() < 0.1,
        ...(properties ? { properties } : {}),
      };
      event.push({ op: "put", record });
      live.push({ seq, id, qos, released: false });
    }
    if (roll >= 0.55 || live.length > window) {
      const i = Math.floor(random() * Math.min(live.length, 8));
      const entry = live[i];
      if (entry.qos === 2 && !entry.released) {
        entry.released = true;
        event.push({ op: "released", id: entry.id });
      } else {
        live.splice(i, 1);
        event.push({ op: "delete", id: entry.id });
      }
    }
    if (random() < 0.1) {
      const id = nextIncoming;
      nextIncoming = (nextIncoming % 65000) + 1;
      incoming.push(id);
      event.push({ op: "incoming", id });
    }
    if (incoming.length > 5 || (incoming.length > 0 && random() < 0.05)) {
      event.push({ op: "incomingDone", id: incoming.shift()! });
    }
    yield event;
  }
}

function say(line: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
}

async function stream(dir: string, seed: number, segmentSize: number): Promise<void> {
  const store = new FileStore(dir, { segmentSize });
  await store.open(CLIENT_ID);
  say("R");
  const source = events(seed);
  let appended = 0;
  let committing = false;
  const commit = () => {
    committing = true;
    const mark = appended;
    store.commit().then(() => {
      say(`D ${mark}`);
      committing = false;
      if (appended > mark) commit();
    }, (error) => {
      say(`E ${error.message}`);
      Deno.exit(3);
    });
  };
  for (;;) {
    const burst = 1 + Math.floor(Math.random() * 24);
    for (let i = 0; i < burst; i++) {
      const event = source.next().value!;
      store.append(event);
      appended += event.length;
      if (!committing) commit();
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

async function hold(dir: string): Promise<void> {
  const store = new FileStore(dir);
  await store.open(CLIENT_ID);
  say("R");
  await new Promise(() => setInterval(() => {}, 1000));
}

if (import.meta.main) {
  const [mode, dir, seed, segment] = Deno.args;
  if (mode === "stream") await stream(dir, Number(seed), Number(segment ?? 4 * 1024 * 1024));
  else if (mode === "hold") await hold(dir);
  else throw new Error(`unknown mode ${mode}`);
}
