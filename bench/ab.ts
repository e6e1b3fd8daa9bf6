/**
 * Side by side: our client from two checkouts (say, main and a change), one
 * scenario, rounds interleaved A B, B A, ... against one private broker.
 * For a before/after figure that the machine's noise does not decide.
 *
 *   git worktree add /tmp/before <commit>
 *   deno run -A bench/ab.ts /tmp/before . stream-100B-nagle [--n=50000] [--rounds=4]
 *
 * Prints each side's median msgs/s, client CPU µs/msg and broker CPU µs/msg,
 * and every run. The broker runs with the scenario's TCP settings.
 *
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { ClientSpec, RunResult, Scenario } from "./lib.ts";
import { startBroker } from "./lib.ts";

interface BenchLib {
  SCENARIOS: Scenario[];
  CLIENTS: ClientSpec[];
  runCell: (
    broker: Awaited<ReturnType<typeof startBroker>>,
    scenario: Scenario,
    client: ClientSpec,
    options: { n?: number },
  ) => Promise<RunResult>;
}

const [dirA, dirB, scenarioId] = Deno.args.filter((a) => !a.startsWith("--"));
if (!dirA || !dirB || !scenarioId) {
  throw new TypeError(
    "usage: bench/ab.ts <checkout A> <checkout B> <scenario> [--n=N] [--rounds=R]",
  );
}
const flag = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const rounds = Number(flag("rounds") ?? 4);

/** Each checkout's own bench/lib.ts, so each side runs its own client and code. */
const load = async (dir: string): Promise<BenchLib> =>
  await import(pathToFileURL(resolve(dir, "bench/lib.ts")).href);
const sides = { A: await load(dirA), B: await load(dirB) };
const scenario = sides.B.SCENARIOS.find((s) => s.id === scenarioId);
if (!scenario) throw new TypeError(`no scenario ${scenarioId} in ${dirB}`);
const n = Number(flag("n") ?? scenario.n);

const broker = await startBroker({ nodelay: scenario.broker === "nodelay" });
const results: Record<"A" | "B", RunResult[]> = { A: [], B: [] };
try {
  for (let round = 0; round < rounds; round++) {
    const order: ("A" | "B")[] = round % 2 === 0 ? ["A", "B"] : ["B", "A"];
    for (const side of order) {
      const lib = sides[side];
      const spec = lib.SCENARIOS.find((s) => s.id === scenarioId) ?? scenario;
      const ours = lib.CLIENTS.find((c) => c.id === "ours")!;
      results[side].push(await lib.runCell(broker, spec, ours, { n }));
    }
  }
} finally {
  await broker.close();
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
// A checkout from before the broker's CPU was measured reports none.
const perMessage = (us: number) => Number.isFinite(us) ? us.toFixed(1) : "n/a";
console.log(`${scenarioId}, N = ${n}, ${rounds} rounds`);
for (const side of ["A", "B"] as const) {
  const runs = results[side];
  console.log(
    `${side} ${side === "A" ? dirA : dirB}: ${
      Math.round(median(runs.map((r) => r.msgsPerSec)))
    } msgs/s, ` +
      `CPU ${median(runs.map((r) => r.cpuUsPerMsg)).toFixed(1)} µs/msg, ` +
      `broker ${perMessage(median(runs.map((r) => r.brokerCpuUsPerMsg)))} µs/msg  ` +
      `(runs: ${runs.map((r) => Math.round(r.msgsPerSec)).join(", ")})`,
  );
}
