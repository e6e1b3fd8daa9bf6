/**
 * The adaptive window alone: what a Nagle broker's holds, a long round trip
 * and a bottleneck do to it.
 *
 * @module
 */
import * as assert from "node:assert/strict";
import {
  AdaptiveWindow,
  INITIAL_WINDOW,
  QUEUE_ALLOWANCE_MS,
  START_PER_MS,
} from "../core/_window.ts";
import { Liveness } from "../core/_liveness.ts";

/** One round trip of a full window: every ACK `rtt(i)` ms after its publish. */
function round(w: AdaptiveWindow, now: number, rtt: (i: number) => number): number {
  const size = w.size;
  w.limited = true;
  for (let i = 0; i < size; i++) w.sample(rtt(i), now + rtt(i), size - i - 1);
  return now + rtt(size - 1);
}

Deno.test("a Nagle hold of up to a round trip is not queueing: the window still grows", () => {
  const w = new AdaptiveWindow(8192);
  w.reset(0);
  let now = 0;
  // 20 ms link; the broker sends the first PUBACK at once and holds the rest
  // until our ACK of it arrives, a round trip later.
  for (let r = 0; r < 12; r++) now = round(w, now, (i) => (i === 0 ? 20 : 40));
  assert.equal(w.size, 8192);
});

Deno.test("a 100 ms link: from 64 to 8 192 in flight within four round trips", () => {
  const w = new AdaptiveWindow(8192);
  w.reset(0);
  assert.equal(w.size, INITIAL_WINDOW);
  let now = 0;
  for (let r = 0; r < 4; r++) now = round(w, now, () => 100);
  assert.equal(w.size, 8192);
});

Deno.test("queueing still shrinks the window, on loopback and on a slow link", () => {
  // Loopback: a broker that answers one message per 0.05 ms.
  const fast = new AdaptiveWindow(8192);
  fast.reset(0);
  let now = 0;
  for (let r = 0; r < 30; r++) now = round(fast, now, (i) => 0.05 * (i + 1));
  // About two allowances' worth of its answers: 200, far below the ceiling of 1 024.
  const allowed = QUEUE_ALLOWANCE_MS / 0.05;
  assert.ok(fast.size <= 2.5 * allowed, `loopback window ${fast.size}`);
  // 20 ms link behind a 2 000 msgs/s bottleneck: the round trip grows with the window.
  const slow = new AdaptiveWindow(8192);
  slow.reset(0);
  now = 0;
  for (let r = 0; r < 30; r++) now = round(slow, now, (i) => 20 + i / 2);
  // 2 000 msgs/s × 20 ms = 40 in flight fill the link; a few round trips' worth queue, not thousands.
  assert.ok(slow.size <= 256, `bottleneck window ${slow.size}`);
});

Deno.test("the first window: 64 per ms of the CONNECT round trip, at least 64, at most the ceiling", () => {
  const w = new AdaptiveWindow(16_384);
  w.reset(0, Infinity, 0.2);
  assert.equal(w.size, INITIAL_WINDOW, "loopback");
  w.reset(0, Infinity, 20);
  assert.equal(w.size, 20 * START_PER_MS, "20 ms");
  w.reset(0, 1000, 100);
  assert.equal(w.size, 1000, "a broker's Receive Maximum");
  const l = new Liveness(0, 10_000);
  l.connecting(5);
  l.connected(105);
  assert.equal(l.handshakeRtt, 100);
});

Deno.test("a fast link's window stays at 1 024 or less; in-flight never exceeds the window", () => {
  const w = new AdaptiveWindow(16_384);
  w.reset(0, Infinity, 30); // a slow CONNACK on loopback: a first window of 1 920
  assert.equal(w.size, 30 * START_PER_MS);
  w.limited = true;
  w.sample(0.05, 1, 1900); // 1 900 still in flight: the window keeps room for them
  assert.equal(w.size, 1900);
  let now = 1;
  for (let r = 0; r < 10; r++) now = round(w, now, () => 0.05);
  assert.equal(w.size, 1024);
});
