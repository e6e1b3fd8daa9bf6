/**
 * `deno task sim`: the deterministic simulator from the command line.
 *
 * ```sh
 * deno task sim                    # one minute on every core, from a fresh base seed
 * deno task sim --seconds 10       # shorter
 * deno task sim --seeds 1-500      # exactly these schedules
 * deno task sim --seed 4242        # replay one schedule with a readable trace
 * deno task sim --seed 4242 --shrink   # and cut it down to the steps that matter
 * ```
 *
 * A failing schedule prints its seed; `--seed` replays it exactly: one seed,
 * one schedule, the same result every time.
 *
 * @module
 */

import { runSchedule } from "./run.ts";
import { faultCount, generate, type Intensity, type Schedule } from "./schedule.ts";
import { shrink } from "./shrink.ts";
import type { WorkReport, WorkRequest } from "./worker.ts";

interface Args {
  seconds: number;
  seeds: number[] | undefined;
  seed: number | undefined;
  shrink: boolean;
  workers: number;
  base: number;
  quiet: boolean;
  stopFirst: boolean;
  intensity: Intensity;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seconds: 60,
    seeds: undefined,
    seed: undefined,
    shrink: false,
    workers: Math.max(1, navigator.hardwareConcurrency ?? 2),
    base: (Date.now() * 7919) % 2_000_000_000,
    quiet: false,
    stopFirst: false,
    intensity: {},
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === "--seconds") args.seconds = Number(next());
    else if (a === "--seeds") args.seeds = range(next());
    else if (a === "--seed") args.seed = Number(next());
    else if (a === "--shrink") args.shrink = true;
    else if (a === "--workers") args.workers = Number(next());
    else if (a === "--base") args.base = Number(next());
    else if (a === "--quiet") args.quiet = true;
    else if (a === "--stop-first") args.stopFirst = true;
    else if (a === "--duration") args.intensity.durationMs = Number(next());
    else throw new Error(`unknown argument ${a} (see sim/main.ts)`);
  }
  return args;
}

function range(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(",")) {
    const [from, to] = part.split("-").map(Number);
    for (let s = from; s <= (to ?? from); s++) out.push(s);
  }
  return out;
}

/** Totals of a batch of schedules. */
export interface Totals {
  schedules: number;
  messages: number;
  faults: number;
  events: number;
  failures: { seed: number; violations: { rule: string; detail: string }[] }[];
  seconds: number;
}

/**
 * Runs schedules on `workers` workers: the given `seeds`, or consecutive
 * seeds from `base` until `seconds` have passed.
 */
export async function runMany(
  options: {
    seeds?: number[];
    base?: number;
    seconds?: number;
    workers: number;
    intensity?: Intensity;
    stopOnFailure?: boolean;
  },
  onFailure?: (seed: number, violations: { rule: string; detail: string }[]) => void,
): Promise<Totals> {
  const started = performance.now();
  const deadline = options.seconds === undefined ? Infinity : started + options.seconds * 1000;
  const totals: Totals = {
    schedules: 0,
    messages: 0,
    faults: 0,
    events: 0,
    failures: [],
    seconds: 0,
  };
  const fixed = options.seeds ? [...options.seeds] : undefined;
  let nextSeed = options.base ?? 1;
  const take = (n: number): number[] => {
    if (fixed) return fixed.splice(0, n);
    if (performance.now() >= deadline) return [];
    const seeds = Array.from({ length: n }, (_, i) => nextSeed + i);
    nextSeed += n;
    return seeds;
  };
  const batch = fixed ? Math.max(1, Math.ceil(fixed.length / (options.workers * 4))) : 4;
  const stops: (() => void)[] = [];
  await Promise.all(
    Array.from({ length: options.workers }, () =>
      new Promise<void>((resolve, reject) => {
        const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
        stops.push(() => {
          worker.terminate();
          resolve();
        });
        const send = () => {
          const seeds = take(batch);
          if (seeds.length === 0) {
            worker.terminate();
            resolve();
            return;
          }
          worker.postMessage({ seeds, intensity: options.intensity ?? {} } satisfies WorkRequest);
        };
        worker.onmessage = (event: MessageEvent<WorkReport>) => {
          const r = event.data;
          if ("done" in r) return send();
          totals.schedules++;
          totals.messages += r.messages;
          totals.faults += r.faults;
          totals.events += r.events;
          if (!r.ok) {
            totals.failures.push({ seed: r.seed, violations: r.violations });
            onFailure?.(r.seed, r.violations);
            if (options.stopOnFailure) { for (const stop of stops) stop(); }
          }
        };
        worker.onerror = (event) => {
          event.preventDefault();
          worker.terminate();
          reject(new Error(`simulator worker crashed: ${event.message}`));
        };
        send();
      })),
  );
  totals.seconds = (performance.now() - started) / 1000;
  return totals;
}

function describe(schedule: Schedule): string {
  const c = schedule.client;
  const l = schedule.link;
  return `MQTT ${
    c.protocolVersion === 5 ? "5" : "3.1.1"
  }, keepalive ${c.keepalive} s, responseTime ${c.responseTime} s, ` +
    `maxInflight ${c.maxInflight}, clean ${c.clean}, store ${c.store}; link ${l.latencyMs} ms ± ${l.jitterMs}, ` +
    `${l.bytesPerMs === Infinity ? "unlimited" : `${l.bytesPerMs} B/ms`}, MSS ${l.mss}; ` +
    `${schedule.steps.length} steps (${faultCount(schedule)} faults)` +
    (schedule.hosts.length > 1 ? `; failover between ${schedule.hosts.join(" and ")}` : "");
}

async function replay(seed: number, wantShrink: boolean, intensity: Intensity): Promise<number> {
  const schedule = generate(seed, intensity);
  console.log(`seed ${seed}: ${describe(schedule)}`);
  const result = await runSchedule(schedule, { trace: true });
  for (const line of result.trace ?? []) console.log(line);
  console.log(
    `\n${result.ok ? "ok" : "FAILED"}: ${result.messages} messages, ${result.faults} faults, ` +
      `${result.events} events, ${(result.virtualMs / 1000).toFixed(1)} s of virtual time`,
  );
  for (const v of result.violations) {
    console.log(`  at ${v.at.toFixed(3)} ms: ${v.rule}: ${v.detail}`);
  }
  if (result.ok || !wantShrink) return result.ok ? 0 : 1;
  const small = await shrink(schedule, result.violations[0].rule, (line) => console.log(line));
  console.log(`\nshrunk to ${small.steps.length} of ${schedule.steps.length} steps:`);
  console.log(JSON.stringify(small.steps, null, 1));
  const again = await runSchedule(small, { trace: true });
  for (const line of again.trace ?? []) console.log(line);
  for (const v of again.violations) {
    console.log(`  at ${v.at.toFixed(3)} ms: ${v.rule}: ${v.detail}`);
  }
  return 1;
}

if (import.meta.main) {
  const args = parseArgs(Deno.args);
  if (args.seed !== undefined) {
    Deno.exit(await replay(args.seed, args.shrink, args.intensity));
  }
  const where = args.seeds
    ? `${args.seeds.length} seeds`
    : `${args.seconds} s from base seed ${args.base}`;
  console.log(`simulating ${where} on ${args.workers} workers`);
  const totals = await runMany(
    {
      seeds: args.seeds,
      base: args.base,
      seconds: args.seeds ? undefined : args.seconds,
      workers: args.workers,
      intensity: args.intensity,
      stopOnFailure: args.stopFirst,
    },
    (seed, violations) => {
      console.log(`FAILED seed ${seed}: ${violations[0]?.rule}: ${violations[0]?.detail}`);
      console.log(`  replay: deno task sim --seed ${seed}`);
    },
  );
  const perMinute = (n: number) => Math.round((n / totals.seconds) * 60).toLocaleString("en");
  console.log(
    `${totals.schedules} schedules, ${totals.messages.toLocaleString("en")} messages, ` +
      `${totals.faults.toLocaleString("en")} faults, ${
        totals.events.toLocaleString("en")
      } events in ` +
      `${totals.seconds.toFixed(1)} s (per minute: ${perMinute(totals.schedules)} schedules, ` +
      `${perMinute(totals.messages)} messages, ${perMinute(totals.faults)} faults); ` +
      `${totals.failures.length} failed`,
  );
  Deno.exit(totals.failures.length === 0 ? 0 : 1);
}
