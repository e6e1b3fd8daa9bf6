/**
 * A simulator worker: runs the schedules of the seeds it is given and
 * reports each result to the main thread.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { runSchedule } from "./run.ts";
import { faultCount, generate, type Intensity } from "./schedule.ts";

/** What the main thread asks. */
export interface WorkRequest {
  seeds: number[];
  intensity: Intensity;
}

/** What the worker answers, once per seed, then `{ done: true }`. */
export type WorkReport =
  | {
    seed: number;
    ok: boolean;
    messages: number;
    faults: number;
    events: number;
    violations: { at: number; rule: string; detail: string }[];
  }
  | { done: true };

self.onmessage = async (event: MessageEvent<WorkRequest>) => {
  const { seeds, intensity } = event.data;
  for (const seed of seeds) {
    const schedule = generate(seed, intensity);
    const result = await runSchedule(schedule);
    const report: WorkReport = {
      seed,
      ok: result.ok,
      messages: result.messages,
      faults: Math.max(result.faults, faultCount(schedule)),
      events: result.events,
      violations: result.violations.slice(0, 5),
    };
    self.postMessage(report);
  }
  self.postMessage({ done: true } satisfies WorkReport);
};
