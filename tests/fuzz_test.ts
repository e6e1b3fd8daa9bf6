/**
 * Seeded fuzzing: a fake broker answers a live client with random, truncated
 * and bit-flipped frames over hundreds of connections. The process must
 * survive (no uncaught error, no unhandled rejection), memory must stay
 * bounded, and afterwards a well-behaved broker must get every accepted
 * message.
 *
 * Reproduce a failure with the seed it prints:
 * `MQTT_FUZZ_SEED=1234 deno task test --filter fuzz`. `MQTT_FUZZ_CASES` sets
 * the number of connections (default 1500, a few frames each).
 */

import assert from "node:assert/strict";
import { Buffer, generate } from "./oracle.ts";
import { FakeBroker } from "./fake_broker.ts";
import { quickClient, text, within } from "./helpers.ts";

const SEED = Number(Deno.env.get("MQTT_FUZZ_SEED") ?? 20261125);
const CASES = Number(Deno.env.get("MQTT_FUZZ_CASES") ?? 1500);
const MESSAGES = 200;

/** mulberry32: a small, fast, seedable PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fuzzer(random: () => number) {
  const int = (n: number) => Math.floor(random() * n);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  // Ids far above the client's own (it sends fewer than 1000 messages), so a
  // structurally valid ACK, even with a bit flipped, never acknowledges a real one.
  const id = () => 40_000 + int(25_000);
  const topic = () => ["a", "b/c", "sensors/7/temp", "é/ü", "x".repeat(int(300))][int(5)];
  const wellFormed = (): Uint8Array => {
    const packets = [
      () => ({ cmd: "connack", returnCode: int(6), sessionPresent: random() < 0.5 }),
      () => ({ cmd: "puback", messageId: id() }),
      () => ({ cmd: "suback", messageId: id(), granted: [int(3)] }),
      () => ({ cmd: "unsuback", messageId: id() }),
      () => ({ cmd: "pingresp" }),
      () => ({
        cmd: "publish",
        topic: topic(),
        payload: Buffer.from(bytes(int(200))),
        qos: int(2),
        messageId: id(),
        retain: random() < 0.2,
        dup: random() < 0.2,
      }),
    ];
    const packet = packets[int(packets.length)]();
    return new Uint8Array(generate(packet as never));
  };
  return (): Uint8Array => {
    const frame = wellFormed();
    const roll = random();
    if (roll < 0.2) return frame; // valid (may still be unexpected)
    if (roll < 0.5) {
      for (let flips = 1 + int(3); flips > 0; flips--) frame[int(frame.length)] ^= 1 << int(8);
      return frame;
    }
    if (roll < 0.7) return frame.slice(0, int(frame.length)); // truncated
    if (roll < 0.85) return bytes(1 + int(40)); // noise
    frame[1] = int(256); // a lying remaining length
    return frame;
  };
}

Deno.test(`fuzz: ${CASES} connections of random, truncated and bit-flipped frames (seed ${SEED})`, async () => {
  const random = prng(SEED);
  const nextFrame = fuzzer(random);
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, {
    responseTime: 0.3,
    keepalive: 0,
    maxPacketSize: 64 * 1024,
    reconnect: { initialDelay: 0.001, maxDelay: 0.004 },
    onMessage: () => {},
  });
  try {
    client.start();
    const rssBefore = Deno.memoryUsage().rss;
    const published = Array.from(
      { length: MESSAGES },
      (_, i) => client.publish("fuzz/out", `${i}`, { qos: 1, sync: i === MESSAGES - 1 }),
    );
    // If the test fails midway, disconnect() rejects these: that is not a second failure.
    for (const call of published) call.catch(() => {});
    let frames = 0;
    for (let i = 0; i < CASES; i++) {
      const conn = await broker.accept({ timeoutMs: 10_000 });
      if (random() < 0.1) {
        await conn.expect("connect"); // fuzz the handshake itself
      } else {
        await conn.handshake({ sessionPresent: random() < 0.5 });
      }
      for (let n = 1 + Math.floor(random() * 4); n > 0; n--, frames++) {
        await conn.sendRaw(nextFrame());
      }
      conn.close();
    }
    const rssAfter = Deno.memoryUsage().rss;
    // A well-behaved broker at last: every accepted message must reach it.
    const good = await broker.accept({ timeoutMs: 5000 });
    await good.handshake({ sessionPresent: true });
    good.autoPuback();
    good.autoPingresp();
    await within(Promise.all(published), 20_000, "every publish to be acknowledged");
    const seen = new Set(
      broker.framesOf("publish", "toBroker")
        .filter((f) => f.packet?.cmd === "publish" && f.packet.topic === "fuzz/out")
        .map((f) => text((f.packet as { payload: Uint8Array }).payload)),
    );
    const missing = Array.from({ length: MESSAGES }, (_, i) => `${i}`).filter((m) => !seen.has(m));
    assert.deepEqual(missing, [], "messages that never reached any broker");
    const growthMb = (rssAfter - rssBefore) / 1e6;
    console.log(`${CASES} connections, ${frames} fuzz frames; RSS grew ${growthMb.toFixed(1)} MB`);
    assert.ok(growthMb < 150, `RSS grew ${growthMb.toFixed(0)} MB during the fuzz`);
  } catch (error) {
    const log = client.log.slice(-12).join("\n");
    const state =
      `${broker.connectionCount} connections, client connected: ${client.isConnected()}`;
    throw new Error(
      `fuzz failed; reproduce with MQTT_FUZZ_SEED=${SEED}: ${error}\n${state}\n${log}`,
      {
        cause: error,
      },
    );
  } finally {
    await client.disconnect();
  }
});
