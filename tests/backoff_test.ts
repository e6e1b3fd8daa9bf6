import assert from "node:assert/strict";
import { Backoff } from "../backoff.ts";

Deno.test("back-off doubles from the first delay up to the cap", () => {
  const backoff = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 1 - 1e-9 });
  const delays = Array.from({ length: 6 }, () => Math.round(backoff.next()));
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
});

Deno.test("back-off jitter stays in the upper half of each span", () => {
  const low = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
  assert.deepEqual([low.next(), low.next(), low.next()], [50, 100, 200]);
  const real = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000 });
  for (let i = 0; i < 50; i++) {
    const span = Math.min(1000, 100 * 2 ** i);
    const delay = real.next();
    assert.ok(delay >= span / 2 && delay <= span, `${delay} outside [${span / 2}, ${span}]`);
  }
});

Deno.test("back-off starts over after reset", () => {
  const backoff = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
  backoff.next();
  backoff.next();
  assert.equal(backoff.attempts, 2);
  backoff.reset();
  assert.equal(backoff.next(), 50);
});

Deno.test("a refusal waits the full cap", () => {
  const backoff = new Backoff({ initialDelayMs: 100, maxDelayMs: 5000 });
  assert.equal(backoff.cap(), 5000);
});

Deno.test("back-off rejects an inverted or empty range", () => {
  assert.throws(() => new Backoff({ initialDelayMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialDelayMs: 500, maxDelayMs: 100 }), RangeError);
});
