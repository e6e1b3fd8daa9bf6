/**
 * The deterministic simulator in the suite: a fixed band of seeds (the same
 * schedules on every run, so a red run replays with `deno task sim --seed S`),
 * a few fresh seeds that change with every run (printed, so a failure is
 * replayable too), determinism itself, and proof that the checker catches a
 * bug written back into the client.
 */

import assert from "node:assert/strict";
import { runMany } from "../sim/main.ts";
import { runSchedule } from "../sim/run.ts";
import { generate } from "../sim/schedule.ts";

const WORKERS = 2;

function report(failures: { seed: number; violations: { rule: string; detail: string }[] }[]) {
  return failures.map((f) =>
    `seed ${f.seed}: ${f.violations[0]?.rule}: ${f.violations[0]?.detail} ` +
    `(replay: deno task sim --seed ${f.seed})`
  ).join("\n");
}

Deno.test("simulator: seeds 1-200 keep every invariant", async () => {
  const seeds = Array.from({ length: 200 }, (_, i) => i + 1);
  const totals = await runMany({ seeds, workers: WORKERS });
  assert.equal(totals.schedules, seeds.length);
  assert.ok(totals.faults > seeds.length, `${totals.faults} faults injected`);
  assert.equal(totals.failures.length, 0, report(totals.failures));
});

Deno.test("simulator: 40 fresh seeds keep every invariant", async () => {
  const base = 1_000_000 + Math.floor(Math.random() * 1_000_000_000);
  console.log(`fresh seeds ${base}..${base + 39}`);
  const seeds = Array.from({ length: 40 }, (_, i) => base + i);
  const totals = await runMany({ seeds, workers: WORKERS });
  assert.equal(totals.schedules, seeds.length);
  assert.equal(totals.failures.length, 0, report(totals.failures));
});

Deno.test("simulator: one seed gives the same trace every time", async () => {
  const seed = 31;
  const first = await runSchedule(generate(seed), { trace: true });
  const second = await runSchedule(generate(seed), { trace: true });
  assert.ok(first.messages > 0 && first.faults > 0);
  assert.equal(first.trace!.length, second.trace!.length);
  assert.deepEqual(first.trace, second.trace);
  assert.equal(first.events, second.events);
});

Deno.test("simulator: schedules differ by seed and cover v5, QoS 2, stores and crashes", () => {
  const schedules = Array.from({ length: 200 }, (_, i) => generate(i + 1));
  assert.notDeepEqual(schedules[0], schedules[1]);
  assert.ok(schedules.some((s) => s.client.protocolVersion === 5));
  assert.ok(schedules.some((s) => s.client.protocolVersion !== 5));
  assert.ok(schedules.some((s) => s.client.store));
  const kinds = new Set(schedules.flatMap((s) => s.steps.map((step) => step.kind)));
  for (const kind of ["restart", "restartClient", "publish", "stream", "subscribe", "acks"]) {
    assert.ok(kinds.has(kind as never), `no ${kind} step in 200 schedules: ${[...kinds]}`);
  }
  assert.ok(
    schedules.some((s) => s.steps.some((step) => "qos" in step && step.qos === 2)),
    "no QoS 2 step",
  );
});
