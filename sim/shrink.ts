/**
 * Shrinking a failing schedule: drop steps (halves, then quarters, down to
 * single steps) as long as the run still breaks the same invariant. The
 * result is a short schedule that shows the bug with little else going on.
 *
 * @module
 */

import { runSchedule } from "./run.ts";
import type { Schedule } from "./schedule.ts";

/** A smaller schedule that still breaks `rule` (at worst `schedule` itself). */
export async function shrink(
  schedule: Schedule,
  rule: string,
  log: (line: string) => void = () => {},
  maxRuns = 400,
): Promise<Schedule> {
  let current = schedule;
  let runs = 0;
  const fails = async (candidate: Schedule): Promise<boolean> => {
    runs++;
    const result = await runSchedule(candidate);
    return result.violations.some((v) => v.rule === rule);
  };
  let chunk = Math.ceil(current.steps.length / 2);
  while (chunk >= 1 && runs < maxRuns) {
    let removed = false;
    for (let start = 0; start < current.steps.length && runs < maxRuns; start += chunk) {
      const steps = [...current.steps.slice(0, start), ...current.steps.slice(start + chunk)];
      const candidate = { ...current, steps };
      if (await fails(candidate)) {
        current = candidate;
        removed = true;
        log(`shrink: ${current.steps.length} steps still fail (${runs} runs)`);
        start -= chunk; // the same position holds new steps now
      }
    }
    if (!removed) chunk = Math.floor(chunk / 2);
  }
  return current;
}
